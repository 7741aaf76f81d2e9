"""The signatures check (audit/signatures.py) on generated histories: valid
signatures from the generator audit clean, every forged-signature kind of
``generate --inject`` gives exactly its row in auditor_bad_sig_losses, on the model
and on a database built from Taler's own SQL files; incremental progress;
the CLI with and without [exchange] MASTER_PUBLIC_KEY; the common Check interface a
signature check writes its findings through."""

import json
import os
import time

import psycopg
import pytest

from audit_helpers import auditor_flavour, dbs  # noqa: F401 (fixtures)
from audit_helpers import GEN_NOW, NOW, q
from conftest import FLAVOURS, flavour_param
from taler_build import build_taler_exchange, require_taler_sql
from taler_ops import audit
from taler_ops.audit import signatures as audit_signatures
from taler_ops.schema import dbinit
from taler_ops.sim import generator, inject
from taler_ops.crypto import crockford, keyring
from taler_ops.crypto.signature_column import row_from_db

SEED = 11


def _dbs(cluster, flavour):
    tag = f"{os.getpid()}_{time.monotonic_ns() % 10**6}"
    ex, aud = cluster.createdb(f"sx_{tag}"), cluster.createdb(f"sa_{tag}")
    if flavour == "taler":
        build_taler_exchange(ex, sql_root=require_taler_sql())
    dbinit.exchange_dbinit(ex)
    dbinit.auditor_dbinit(aud)
    return ex, aud


def _run(ex, aud, seed=SEED, **kw):
    return audit.run(ex, aud, currency="KUDOS", now_us=GEN_NOW,
                     signatures=keyring.Keyring(seed).ctx, **kw)


def _bad_sigs(aud):
    with psycopg.connect(aud) as conn:
        return sorted(conn.execute(
            "SELECT operation, problem_row_id, (loss).val * 100000000 + (loss).frac,"
            " operation_specific_pub FROM auditor.auditor_bad_sig_losses").fetchall())


@pytest.mark.parametrize("flavour", [flavour_param(f) for f in FLAVOURS])
def test_generated_signatures_are_valid_and_audit_clean(cluster, flavour):
    ex, aud = _dbs(cluster, flavour)
    generator.bulk(ex, 3000, seed=SEED, now_us=GEN_NOW)
    report = _run(ex, aud)
    assert report["findings"] == [], report["findings"][:5]
    examined = report["checks"]["signatures"]["rows_examined"]
    # Every verifiable column was read (the history touches every replicated table).
    with psycopg.connect(ex) as conn:
        for spec in audit_signatures.COLUMNS:
            n = conn.execute(f"SELECT count(*) FROM exchange.{spec.table}").fetchone()[0]
            assert n > 0, spec.name
    assert set(examined) == {spec.table for spec in audit_signatures.COLUMNS}
    # reserve_sig and denom_sig are two columns: each row is verified twice.
    assert examined["reserves_out"] == 2 * _count(ex, "reserves_out")
    assert examined["known_coins"] == _count(ex, "known_coins")
    assert _bad_sigs(aud) == []


def _count(uri, table):
    with psycopg.connect(uri) as conn:
        return conn.execute(f"SELECT count(*) FROM exchange.{table}").fetchone()[0]


@pytest.mark.parametrize("flavour", [flavour_param(f) for f in FLAVOURS])
def test_each_forged_signature_is_found_once(cluster, flavour, tmp_path):
    ex, aud = _dbs(cluster, flavour)
    record_path = tmp_path / "planted.json"
    generator.bulk(ex, 3000, seed=SEED, now_us=GEN_NOW, inject=list(inject.FORGED),
                   record_path=str(record_path))
    record = json.loads(record_path.read_text())
    assert sorted(e["kind"] for e in record) == sorted(inject.FORGED)
    expected = sorted((audit_signatures.OPERATIONS[inject.FORGED[e["kind"]]], e["serial"])
                      for e in record)
    report = _run(ex, aud)
    # Only bad_sig_loss findings: a forged signature breaks no other rule.
    assert {f["kind"] for f in report["findings"]} == {"bad_sig_loss"}
    assert sorted((f["table"], f["serial"]) for f in report["findings"]) == expected
    stored = _bad_sigs(aud)
    assert sorted((op, row) for op, row, _, _ in stored) == expected
    # The amount at risk and the key, for a few of them.
    with psycopg.connect(ex) as conn:
        for op, row, loss, pub in stored:
            if op == "deposit":
                amount, coin_pub = conn.execute(
                    "SELECT (amount_with_fee).val * 100000000 + (amount_with_fee).frac, coin_pub"
                    " FROM exchange.coin_deposits WHERE coin_deposit_serial_id = %s",
                    (row,)).fetchone()
                assert (loss, bytes(pub)) == (amount, bytes(coin_pub))
            elif op == "withdraw":
                amount, reserve_pub = conn.execute(
                    "SELECT (ro.amount_with_fee).val * 100000000 + (ro.amount_with_fee).frac,"
                    " r.reserve_pub FROM exchange.reserves_out ro JOIN exchange.reserves r"
                    " USING (reserve_uuid) WHERE ro.reserve_out_serial_id = %s", (row,)).fetchone()
                assert (loss, bytes(pub)) == (amount, bytes(reserve_pub))
            elif op in ("denomination-key", "wire-fee"):
                assert loss == 0 and bytes(pub) == keyring.Keyring(SEED).master_pub
            elif op == "coin":
                assert loss > 0
    # Incremental: a second run verifies nothing again and reports nothing again.
    again = _run(ex, aud)
    assert again["findings"] == [] and again["checks"]["signatures"]["rows_examined"] == {}
    assert _bad_sigs(aud) == stored


def test_forged_rows_fail_only_their_own_column(exchange_db):
    """Each forged kind makes its column's verdict False on exactly one row and
    leaves every other signature column valid (no collateral findings)."""
    generator.bulk(exchange_db, 2500, seed=SEED, now_us=GEN_NOW,
                   inject=["bad_sig_coin", "bad_sig_reveal", "bad_sig_deposit"])
    ctx = keyring.Keyring(SEED).ctx
    bad = {}
    with psycopg.connect(exchange_db) as conn:
        for spec in audit_signatures.COLUMNS:
            cur = conn.execute(spec.query(), {"after": 0, "limit": 10 ** 9})
            names = [d.name for d in cur.description]
            for values in cur:
                row = row_from_db(names, values)
                if spec.verify(row, ctx) is False:
                    bad.setdefault(spec.name, []).append(row["serial"])
    assert sorted(bad) == ["coin_deposits.coin_sig", "known_coins.denom_sig",
                           "refresh_revealed_coins.ev_sig"]
    assert all(len(serials) == 1 for serials in bad.values())


def test_new_traffic_is_verified_alone(exchange_db, cluster):
    aud = cluster.createdb(f"si_{os.getpid()}_{time.monotonic_ns() % 10**6}")
    dbinit.auditor_dbinit(aud)
    generator.bulk(exchange_db, 1500, seed=SEED, now_us=GEN_NOW)
    first = _run(exchange_db, aud)
    assert first["findings"] == []
    # The same seed continues the database (same master key, new other keys).
    inserted = generator.bulk(exchange_db, 800, seed=SEED, now_us=GEN_NOW,
                              inject=["bad_sig_withdraw"])
    second = _run(exchange_db, aud)
    assert [(f["table"]) for f in second["findings"]] == ["withdraw"]
    examined = second["checks"]["signatures"]["rows_examined"]
    for spec in audit_signatures.COLUMNS:
        per_table = sum(1 for s in audit_signatures.COLUMNS if s.table == spec.table)
        assert examined.get(spec.table, 0) == per_table * inserted.get(spec.table, 0), spec.name
    after = second["checks"]["signatures"]["progress_after"]
    assert all(v > 0 for v in after.values())


def test_without_master_key_the_check_is_skipped(exchange_db, cluster):
    aud = cluster.createdb(f"sk_{os.getpid()}_{time.monotonic_ns() % 10**6}")
    dbinit.auditor_dbinit(aud)
    generator.bulk(exchange_db, 1000, seed=SEED, now_us=GEN_NOW, inject=["bad_sig_withdraw"])
    report = audit.run(exchange_db, aud, currency="KUDOS", now_us=GEN_NOW)
    assert report["findings"] == []
    assert report["checks"]["signatures"]["progress_after"] == {}
    # With the key, later, everything is verified from the start.
    report = _run(exchange_db, aud)
    assert [f["table"] for f in report["findings"]] == ["withdraw"]


def test_another_master_key_makes_every_master_signature_bad(exchange_db, cluster):
    aud = cluster.createdb(f"sm_{os.getpid()}_{time.monotonic_ns() % 10**6}")
    dbinit.auditor_dbinit(aud)
    generator.bulk(exchange_db, 600, seed=SEED, now_us=GEN_NOW)
    report = _run(exchange_db, aud, seed=SEED + 1)
    ops = {f["table"] for f in report["findings"]}
    # The auditors' signatures bind the master public key too.
    assert ops == {"denomination-key", "denomination-revocation", "signkey",
                   "signkey-revocation", "wire-fee", "global-fee", "profit-drain",
                   "auditor-denomination"}


def test_cli_generate_and_audit_with_the_configured_master_key(cluster, conf, cli, tmp_path):
    tag = f"{os.getpid()}_{time.monotonic_ns() % 10**6}"
    ex, aud = cluster.createdb(f"cx_{tag}"), cluster.createdb(f"ca_{tag}")
    dbinit.exchange_dbinit(ex)
    dbinit.auditor_dbinit(aud)
    res = cli("generate", "--show-master-key", "--seed", 7)
    assert res.returncode == 0, res.stderr
    master = res.stdout.strip()
    assert crockford.decode(master, 32) == keyring.Keyring(7).master_pub
    sections = {"exchange": {"CURRENCY": "KUDOS", "MASTER_PUBLIC_KEY": master,
                             "BASE_URL": "https://exchange.demo.taler.net/"},
                "exchangedb-postgres": {"CONFIG": ex}, "auditordb-postgres": {"CONFIG": aud}}
    path = conf("ok.conf", sections)
    # A configured key that is not the seed's is refused before anything is written.
    res = cli("generate", "-c", path, "--rows", 800, "--seed", 8, "--now", GEN_NOW)
    assert res.returncode == 6 and "MASTER_PUBLIC_KEY" in res.stderr
    res = cli("generate", "-c", path, "--rows", 800, "--seed", 7, "--now", GEN_NOW,
              "--inject", "bad_sig_deposit,bad_sig_merge", "--record", tmp_path / "r.json")
    assert res.returncode == 0, res.stderr
    planted = json.loads((tmp_path / "r.json").read_text())
    res = cli("audit", "-c", path, "-t", "--now", GEN_NOW, "--report", tmp_path / "a.json")
    assert res.returncode == 0, res.stderr
    report = json.loads((tmp_path / "a.json").read_text())
    assert sorted((f["table"], f["serial"]) for f in report["findings"]) == sorted(
        (audit_signatures.OPERATIONS[inject.FORGED[e["kind"]]], e["serial"]) for e in planted)
    # More traffic from another seed, signed as the same exchange (--master-seed): no
    # new finding, although every row of it is new.
    res = cli("generate", "-c", path, "--rows", 400, "--seed", 9, "--master-seed", 7, "--now", GEN_NOW)
    assert res.returncode == 0, res.stderr
    res = cli("audit", "-c", path, "-t", "--now", GEN_NOW, "--report", tmp_path / "b.json")
    assert res.returncode == 0, res.stderr
    again = json.loads((tmp_path / "b.json").read_text())
    assert again["checks"]["signatures"]["rows_examined"] and again["findings"] == []
    # Without the key: skipped, and said so.
    del sections["exchange"]["MASTER_PUBLIC_KEY"]
    res = cli("audit", "-c", conf("nokey.conf", sections), "-t", "--now", GEN_NOW)
    assert res.returncode == 0 and "signatures check skipped" in res.stderr


def test_live_traffic_is_signed_and_forgeries_are_found(exchange_db, cluster, tmp_path):
    """Live mode re-derives the keys of the denominations an earlier run with the
    same seed wrote, signs its traffic, and plants forged signatures too."""
    aud = cluster.createdb(f"sl_{os.getpid()}_{time.monotonic_ns() % 10**6}")
    dbinit.auditor_dbinit(aud)
    generator.bulk(exchange_db, 800, seed=SEED)
    with psycopg.connect(exchange_db) as conn:
        denoms_before = conn.execute("SELECT count(*) FROM exchange.denominations").fetchone()[0]
    record_path = tmp_path / "live.json"
    stats = generator.live(exchange_db, 300, 1.5, seed=SEED,
                           inject=["bad_sig_withdraw", "bad_sig_deposit"],
                           record_path=str(record_path))
    assert stats["inserted"]["reserves_out"] > 0
    with psycopg.connect(exchange_db) as conn:
        # The bulk run's denominations were reused: no new generation.
        assert conn.execute("SELECT count(*) FROM exchange.denominations").fetchone()[0] \
            == denoms_before
    planted = json.loads(record_path.read_text())
    report = audit.run(exchange_db, aud, currency="KUDOS", signatures=keyring.Keyring(SEED).ctx)
    bad = sorted((f["table"], f["serial"]) for f in report["findings"]
                 if f["kind"] == "bad_sig_loss")
    assert bad == sorted((audit_signatures.OPERATIONS[inject.FORGED[e["kind"]]], e["serial"])
                         for e in planted)


@pytest.mark.parametrize("flavour", [flavour_param(f) for f in FLAVOURS])
def test_safe_copy_after_sync_audits_clean_and_finds_forgeries(cluster, tmp_path, flavour):
    """The sync copies every signed value (age commitments, merchant signatures,
    planchets) as it is: a safe copy verifies as the primary does."""
    from taler_ops import sync
    tag = f"{os.getpid()}_{time.monotonic_ns() % 10**6}"
    primary, safe, aud = (cluster.createdb(f"{n}_{tag}") for n in ("sp", "ss", "sa"))
    if flavour == "taler":
        for uri in (primary, safe):
            build_taler_exchange(uri, sql_root=require_taler_sql())
    dbinit.exchange_dbinit(primary)
    dbinit.exchange_dbinit(safe, role="safe-copy")
    dbinit.auditor_dbinit(aud)
    record_path = tmp_path / "planted.json"
    generator.bulk(primary, 2500, seed=SEED, now_us=GEN_NOW,
                   inject=["bad_sig_coin", "bad_sig_merge", "bad_sig_refund"],
                   record_path=str(record_path))
    sync.sync_once(primary, safe)
    planted = json.loads(record_path.read_text())
    report = _run(safe, aud)
    assert report["role"] == "safe-copy"
    assert sorted((f["kind"], f["table"], f["serial"]) for f in report["findings"]) == sorted(
        ("bad_sig_loss", audit_signatures.OPERATIONS[inject.FORGED[e["kind"]]], e["serial"])
        for e in planted)


def test_unsigned_history_audits_clean_without_the_check_and_forged_with_it(cluster):
    """generator.bulk(signed=False), for benchmarks at scale (bench/bench_scale.py): the
    same layouts, so the sync copies all of it and the arithmetic checks pass, but no
    signature verifies: the signatures check flags them."""
    from taler_ops import sync
    from taler_ops.schema import registry
    ex, aud = _dbs(cluster, "model")
    _, aud_sig = _dbs(cluster, "model")
    safe = cluster.createdb(f"su_{os.getpid()}_{time.monotonic_ns() % 10**6}")
    dbinit.exchange_dbinit(safe, role="safe-copy")
    generator.bulk(ex, 3000, seed=SEED, now_us=GEN_NOW, signed=False)
    rows = sum(_count(ex, e.name) for e in registry.REPLICATED)
    assert sync.sync_once(ex, safe)["copied"] == rows
    plain = audit.run(safe, aud, currency="KUDOS", now_us=GEN_NOW)
    assert plain["findings"] == [], plain["findings"][:5]
    _run(safe, aud_sig)
    bad = _bad_sigs(aud_sig)
    # Every withdrawal's reserve signature and every coin's denomination signature at least.
    assert len(bad) >= _count(safe, "reserves_out") + _count(safe, "known_coins")


def test_a_check_writes_bad_sig_losses_through_the_common_interface(dbs):
    """Check.finding(kind, **Taler's columns) is what a signature check plugs into."""
    from taler_ops.audit.common import Check, Units
    with psycopg.connect(dbs[1], autocommit=True) as aud:
        check = Check("signatures", None, aud, NOW, "KUDOS")
        with aud.transaction():
            check.finding("bad_sig_loss", problem_row_id=7, operation="deposit",
                          loss=Units(150_000_000), operation_specific_pub=b"\x05" * 32)
            check.write()
        entry = check.report_findings()[0]
        assert (entry["taler_table"], entry["table"], entry["serial"], entry["loss"]) == (
            "auditor_bad_sig_losses", "deposit", 7, "KUDOS:1.5")
        assert audit.open_findings_by_kind(aud) == {"bad_sig_loss": 1}
    assert q(dbs[1], "SELECT problem_row_id, operation, (loss).val, (loss).frac, "
                     "operation_specific_pub, suppressed FROM auditor.auditor_bad_sig_losses") == [
        (7, "deposit", 1, 50_000_000, b"\x05" * 32, False)]
