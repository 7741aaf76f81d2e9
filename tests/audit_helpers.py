"""Shared by the audit tests (tests/test_audit_*.py): an exchange and an auditor database of
either flavour (the model's, or built from Taler's own SQL files), the audit run on them, and
what it found and stored, read back.  The fixtures are imported by the tests that use them."""

import os
import time

import psycopg
import pytest

from audit_history import DAY, T0, History
from conftest import FLAVOURS, flavour_param
from taler_build import build_taler_auditor, build_taler_exchange, require_taler_sql
from taler_ops import audit
from taler_ops.schema import dbinit
from taler_ops.audit.common import KINDS

NOW = T0 + 10 * DAY
# The clock of generated histories (taler_ops.sim.generator's now_us, `generate --now`).
GEN_NOW = 1_760_000_000_000_000
FINDING_OF = {"coin_overspend": "coin_overspent", "reserve_overdraft": "reserve_balance_insufficient",
              "wire_out_mismatch": "wire_out_inconsistency",
              "reserve_balance_mismatch": "reserve_balance_summary_wrong",
              "close_wrong_account": "row_inconsistency",
              "close_fee_mismatch": "amount_arithmetic_inconsistency"}
# Where the purses check's findings point (purse decisions and requests).
PURSES_CHECK_TABLES = ("purse_decision", "purse_requests")


def make_auditor_db(uri, flavour):
    """An auditor database of ``flavour``: the model, or built from Taler's own files
    (psql, as taler-auditor-dbinit) and then given taler-ops' audit state by auditor-dbinit."""
    if flavour == "taler":
        root = require_taler_sql()
        build_taler_auditor(uri, sql_root=root)
        dbinit.auditor_dbinit(uri, sql_dir=os.path.join(root, "auditor"))
    else:
        dbinit.auditor_dbinit(uri)
    return uri


@pytest.fixture(params=[flavour_param(f) for f in FLAVOURS])
def auditor_flavour(request):
    return request.param


@pytest.fixture
def dbs(cluster, request, auditor_flavour):
    """(exchange uri, auditor uri): a primary exchange database and a separate auditor
    one, of either flavour (the audit must give the same results on both)."""
    base = "".join(ch if ch.isalnum() else "_" for ch in request.node.name[:30].lower())
    ex = cluster.createdb(f"ax_{base}_{os.getpid()}_{time.monotonic_ns() % 10**6}")
    au = cluster.createdb(f"aa_{base}_{os.getpid()}_{time.monotonic_ns() % 10**6}")
    dbinit.exchange_dbinit(ex)
    make_auditor_db(au, auditor_flavour)
    return ex, au


@pytest.fixture
def hist(dbs):
    h = History(dbs[0])
    yield h
    h.close_conn()


@pytest.fixture(params=[flavour_param(f) for f in FLAVOURS])
def xdbs(cluster, request):
    """(exchange uri, auditor uri) with both databases of one flavour: the model's, or
    built from Taler's own SQL files (exchange and auditor)."""
    tag = f"{os.getpid()}_{time.monotonic_ns() % 10**6}"
    ex, au = cluster.createdb(f"xe_{tag}"), cluster.createdb(f"xa_{tag}")
    if request.param == "taler":
        build_taler_exchange(ex, sql_root=require_taler_sql())
    dbinit.exchange_dbinit(ex)
    make_auditor_db(au, request.param)
    return ex, au


@pytest.fixture
def xhist(xdbs):
    h = History(xdbs[0])
    yield h
    h.close_conn()


def run(dbs, **kw):
    kw.setdefault("now_us", NOW)
    kw.setdefault("currency", "KUDOS")
    return audit.run(dbs[0], dbs[1], **kw)


def found(report, kind=None):
    return sorted((f["kind"], f["table"], f["serial"]) for f in report["findings"]
                  if kind is None or f["kind"] == kind)


def q(uri, query, params=None):
    with psycopg.connect(uri, autocommit=True) as conn:
        cur = conn.execute(query, params)
        return cur.fetchall() if cur.description else None


def progress(uri):
    return dict(q(uri, "SELECT progress_key, progress_offset FROM auditor.auditor_progress"))


def _table_col(k):
    if k.row_table is None:
        return "NULL::text"
    return f"'{k.row_table[1:]}'" if k.row_table.startswith("=") else k.row_table


def all_findings(uri):
    """Every stored finding as (kind, table, serial), sorted, duplicates kept; table and
    serial are None where Taler's report table has no column for them."""
    out = []
    for kind, k in KINDS.items():
        out += [(kind, t, s) for t, s in q(
            uri, f"SELECT {_table_col(k)}, {k.serial or 'NULL::int8'} FROM auditor.{k.table} "
                 f"WHERE {k.where}")]
    return sorted(out, key=repr)


def stored(findings):
    """(kind, table, serial) of a run's report as Taler's report tables keep them."""
    out = []
    for kind, table, serial in findings:
        k = KINDS[kind]
        out.append((kind, None if k.row_table is None else table,
                    serial if k.serial else None))
    return sorted(out, key=repr)


def clean_history(h):
    """A small history that keeps every rule: no finding expected."""
    d = h.denomination(coin="1", fee_withdraw="0.01", fee_deposit="0.02", fee_refresh="0.03",
                       fee_refund="0.04")
    h.wire_fee("0.1", closing_fee="0.1")
    pub, uuid, _ = h.reserve("3.5")
    h.withdraw(uuid, d, "1.01")
    h.withdraw(uuid, d, "1.01")
    h.close(pub, "1.38", closing_fee="0.1")            # 3.5 - 2.02 = 1.48 = 1.38 + 0.1
    c1, c2 = h.coin(d), h.coin(d)
    b1, _ = h.deposit(c1, "0.6")
    h.refund(c1, b1, "0.1")
    b2, _ = h.deposit(c1, "0.5")                      # 0.6 - 0.1 + 0.5 = 1.0: exactly the value
    h.melt(c2, "1")
    h.wire_out([b1], "0.38")                          # 0.6 - 0.02 - 0.1 refund - 0.1 fee
    h.wire_out([b2], "0.38")                          # 0.5 - 0.02 - 0.1 fee
    return d


def _conf(conf, dbs, currency="KUDOS"):
    sections = {"exchangedb-postgres": {"CONFIG": dbs[0]}, "auditordb-postgres": {"CONFIG": dbs[1]}}
    if currency:
        sections["exchange"] = {"CURRENCY": currency}
    return conf("audit.conf", sections)
