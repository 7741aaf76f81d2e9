"""The coins check's reports on denominations and melts (audit/coins_checks.py):
emergencies by value and by count, hanging refreshes, denominations without this
auditor's signature.  A generated history audits without them; each kind planted
by ``generate --inject`` gives exactly one row in its Taler table, on the model and on
databases built from Taler's own SQL files, and stays one row when later runs
see the denomination or the melt again; ``auditor-dbinit -r`` clears them as
Taler's restart.sql does."""

import json
import os
import time

import pytest

from audit_helpers import GEN_NOW, q
from audit_history import History
from conftest import FLAVOURS, flavour_param
from taler_build import build_taler_auditor, build_taler_exchange, require_taler_sql
from taler_ops import audit
from taler_ops.schema import dbinit
from taler_ops.sim import generator
from taler_ops.crypto import crockford

SEED = 21
TABLES = {"emergency": "auditor_emergency", "emergency_by_count": "auditor_emergency_by_count",
          "refresh_hanging": "auditor_refreshes_hanging",
          "denomination_without_sigs": "auditor_denominations_without_sigs"}


def _dbs(cluster, flavour):
    tag = f"{os.getpid()}_{time.monotonic_ns() % 10**6}"
    ex, aud = cluster.createdb(f"cx_{tag}"), cluster.createdb(f"ca_{tag}")
    if flavour == "taler":
        root = require_taler_sql()
        build_taler_exchange(ex, sql_root=root)
        build_taler_auditor(aud, sql_root=root)
        dbinit.exchange_dbinit(ex)
        dbinit.auditor_dbinit(aud, sql_dir=os.path.join(root, "auditor"))
    else:
        dbinit.exchange_dbinit(ex)
        dbinit.auditor_dbinit(aud)
    return ex, aud


def restart(aud, flavour):
    """auditor-dbinit -r (from Taler's files for a Taler-built auditor database)."""
    sql_dir = os.path.join(require_taler_sql(), "auditor") if flavour == "taler" else None
    assert dbinit.auditor_dbinit(aud, restart=True, sql_dir=sql_dir)["restarted"]


def active_auditor(ex):
    """The public key of the generator's active auditor: the one this audit plays."""
    return bytes(q(ex, "SELECT auditor_pub FROM exchange.auditors WHERE is_active "
                       "ORDER BY auditor_uuid LIMIT 1")[0][0])


def run(ex, aud, **kw):
    kw.setdefault("auditor_pub", active_auditor(ex))
    return audit.run(ex, aud, currency="KUDOS", now_us=GEN_NOW, **kw)


def rows(aud, kind):
    return q(aud, f"SELECT * FROM auditor.{TABLES[kind]} ORDER BY row_id")


def units(uri, expr, table, where, params):
    return q(uri, f"SELECT ({expr}).val * 100000000 + ({expr}).frac FROM {table} WHERE {where}",
             params)[0][0]


@pytest.mark.parametrize("flavour", [flavour_param(f) for f in FLAVOURS])
def test_generated_history_has_none_of_them(cluster, flavour):
    ex, aud = _dbs(cluster, flavour)
    generator.bulk(ex, 3000, seed=SEED, now_us=GEN_NOW)
    report = run(ex, aud)
    assert report["findings"] == [], report["findings"][:5]
    for kind in TABLES:
        assert rows(aud, kind) == [], kind
    # The checks did look: every used denomination has the auditor's signature,
    # every melt its reveal, and the running totals they judge are there.
    assert q(aud, "SELECT count(*) FROM auditor.auditor_denomination_pending")[0][0] > 3
    assert q(ex, "SELECT count(*) FROM exchange.refresh_commitments")[0][0] > 0
    for key in ("coins_emergencies_loss", "coins_emergencies_loss_by_count",
                "total_refresh_hanging"):
        assert report["balances"][key] == "KUDOS:0"


@pytest.mark.parametrize("flavour", [flavour_param(f) for f in FLAVOURS])
def test_each_planted_kind_is_one_row_in_its_taler_table(cluster, flavour, tmp_path):
    ex, aud = _dbs(cluster, flavour)
    record_path = tmp_path / "planted.json"
    generator.bulk(ex, 4000, seed=SEED, now_us=GEN_NOW, inject=list(TABLES),
                   record_path=str(record_path))
    record = {e["kind"]: e for e in json.loads(record_path.read_text())}
    assert sorted(record) == sorted(TABLES)
    report = run(ex, aud)
    found = sorted((f["kind"], f["table"], f["serial"]) for f in report["findings"])
    emergency = record["emergency"]
    overspent = [f for f in report["findings"] if f["kind"] == "coin_overspent"]
    assert found == sorted(
        [(kind, record[kind]["table"], record[kind]["serial"]) for kind in TABLES]
        # more value out of a denomination than it issued: one coin was overspent
        + [("coin_overspent", "coin_deposits", emergency["deposit_serial"])]), found
    assert [bytes.fromhex(emergency["coin_pub"])] == [
        bytes.fromhex(f["coin_pub"]) for f in overspent]

    # auditor_emergency: the denomination, its risk and loss as in denomination_pending
    h = bytes.fromhex(emergency["denom_pub_hash"])
    (e,) = q(aud, "SELECT denompub_h, (denom_loss).val * 100000000 + (denom_loss).frac, "
                  "(denom_risk).val * 100000000 + (denom_risk).frac, deposit_start, deposit_end,"
                  " (value).val * 100000000 + (value).frac FROM auditor.auditor_emergency")
    pending = q(aud, "SELECT (denom_loss).val * 100000000 + (denom_loss).frac, "
                     "(denom_risk).val * 100000000 + (denom_risk).frac "
                     "FROM auditor.auditor_denomination_pending WHERE denom_pub_hash = %s", (h,))
    denom = q(ex, "SELECT valid_from, expire_deposit, (coin).val * 100000000 + (coin).frac "
                  "FROM exchange.denominations WHERE denom_pub_hash = %s", (h,))[0]
    assert (bytes(e[0]), e[1], e[2]) == (h, *pending[0])
    assert e[1] >= emergency["amount"]
    assert e[3:] == denom

    # auditor_emergency_by_count: one more coin known than issued
    by_count = record["emergency_by_count"]
    hc = bytes.fromhex(by_count["denom_pub_hash"])
    (c,) = q(aud, "SELECT denompub_h, num_issued, num_known FROM "
                  "auditor.auditor_emergency_by_count")
    assert bytes(c[0]) == hc and c[2] == c[1] + 1
    issued = q(aud, "SELECT num_issued FROM auditor.auditor_denomination_pending "
                    "WHERE denom_pub_hash = %s", (hc,))[0][0]
    assert c[1] == issued
    assert q(aud, "SELECT count(*) FROM auditor.auditor_emergency WHERE denompub_h = %s",
             (hc,)) == [(0,)], "the forged coins' small amounts leave no emergency by value"

    # auditor_refreshes_hanging: the melt and its amount
    hanging = record["refresh_hanging"]
    assert q(aud, "SELECT problem_row_id, (amount).val * 100000000 + (amount).frac "
                  "FROM auditor.auditor_refreshes_hanging") == [
        (hanging["serial"], hanging["amount"])]
    assert report["balances"]["total_refresh_hanging"] != "KUDOS:0"

    # auditor_denominations_without_sigs: the denomination the active auditor skipped
    skipped = bytes.fromhex(record["denomination_without_sigs"]["denom_pub_hash"])
    assert [bytes(r[0]) for r in q(aud, "SELECT denompub_h FROM "
                                       "auditor.auditor_denominations_without_sigs")] == [skipped]

    # The report of open findings counts them.
    for kind in TABLES:
        assert report["open_findings_by_kind"][kind] == 1, kind

    # Later runs that see the same denominations again: still one row each, updated.
    hist = History(ex)
    try:
        coin = hist.coin(by_count["serial"])          # one more forged coin
        hist.deposit(coin, "0.01")
        hist.deposit(bytes.fromhex(emergency["coin_pub"]), "1")   # more out of the other one
    finally:
        hist.close_conn()
    again = run(ex, aud)
    assert [f["kind"] for f in again["findings"] if f["kind"] in TABLES] == []
    assert {kind: len(rows(aud, kind)) for kind in TABLES} == dict.fromkeys(TABLES, 1)
    assert q(aud, "SELECT num_issued, num_known FROM auditor.auditor_emergency_by_count") == [
        (c[1], c[2] + 1)]
    (loss,) = q(aud, "SELECT (denom_loss).val * 100000000 + (denom_loss).frac "
                     "FROM auditor.auditor_emergency")[0]
    assert loss == q(aud, "SELECT (denom_loss).val * 100000000 + (denom_loss).frac "
                          "FROM auditor.auditor_denomination_pending WHERE denom_pub_hash = %s",
                     (h,))[0][0]
    assert loss >= e[1]

    # auditor-dbinit -r empties them (Taler's restart.sql does); the rerun finds them again.
    restart(aud, flavour)
    for kind in TABLES:
        assert rows(aud, kind) == [], kind
    rerun = run(ex, aud)
    assert sorted(f["kind"] for f in rerun["findings"] if f["kind"] in TABLES) == sorted(TABLES)


def test_without_auditor_key_denominations_are_not_judged(cluster, tmp_path):
    ex, aud = _dbs(cluster, "model")
    generator.bulk(ex, 2500, seed=SEED, now_us=GEN_NOW, inject=["denomination_without_sigs"])
    assert run(ex, aud, auditor_pub=None)["findings"] == []
    # Taking the key later, the denominations already in use are judged.
    assert [f["kind"] for f in run(ex, aud)["findings"]] == ["denomination_without_sigs"]
    # Another auditor's key: every used denomination it never signed.
    other = q(ex, "SELECT auditor_pub FROM exchange.auditors WHERE NOT is_active")[0][0]
    restart(aud, "model")
    report = run(ex, aud, auditor_pub=bytes(other))
    unsigned_used = q(ex, """SELECT count(DISTINCT d.denominations_serial)
        FROM exchange.denominations d JOIN exchange.reserves_out ro USING (denominations_serial)
        WHERE NOT EXISTS (SELECT 1 FROM exchange.auditor_denom_sigs s JOIN exchange.auditors a
                          USING (auditor_uuid) WHERE s.denominations_serial = d.denominations_serial
                          AND NOT a.is_active)""")[0][0]
    assert unsigned_used > 0
    assert len([f for f in report["findings"] if f["kind"] == "denomination_without_sigs"]) \
        >= unsigned_used


def test_cli_reads_the_auditor_key_and_says_once_when_it_is_missing(cluster, conf, cli):
    ex, aud = _dbs(cluster, "model")
    generator.bulk(ex, 1500, seed=SEED, now_us=GEN_NOW, inject=["denomination_without_sigs"])
    key = crockford.encode(active_auditor(ex))
    base = {"exchangedb-postgres": {"CONFIG": ex}, "auditordb-postgres": {"CONFIG": aud},
            "exchange": {"CURRENCY": "KUDOS"}}
    res = cli("audit", "-c", conf("a.conf", base), "-t", "--now", str(GEN_NOW))
    assert res.returncode == 0, res.stderr
    assert res.stderr.count("[auditor] PUBLIC_KEY is not set") == 1
    assert "denomination_without_sigs" not in res.stdout
    res = cli("audit", "-c", conf("b.conf", {**base, "auditor": {"PUBLIC_KEY": key}}), "-t",
              "--now", str(GEN_NOW))
    assert res.returncode == 0, res.stderr
    assert "[auditor] PUBLIC_KEY" not in res.stderr
    assert "denomination_without_sigs 1" in res.stdout
    bad = cli("audit", "-c", conf("c.conf", {**base, "auditor": {"PUBLIC_KEY": "not-a-key"}}), "-t")
    assert bad.returncode == 6 and "[auditor] PUBLIC_KEY" in bad.stderr
