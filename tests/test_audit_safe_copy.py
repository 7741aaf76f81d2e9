"""Auditing a safe copy: after a sync (-i refused there), up to the last complete sync
pass, what a run records of the sync, and with the auditor role's privileges only."""

import datetime
import json
import os
import time

import pytest

from audit_helpers import FINDING_OF, GEN_NOW, NOW, found, make_auditor_db, progress, q
from audit_history import DAY, T0, History
from conftest import FLAVOURS, flavour_param
from taler_build import build_taler_exchange, require_taler_sql
from taler_ops import audit
from taler_ops.schema import dbinit


@pytest.mark.parametrize("flavour", [flavour_param(f) for f in FLAVOURS])
def test_generated_safe_copy_after_sync(cluster, tmp_path, flavour):
    """generate -> primary, sync -> safe copy, audit the copy; -i is refused there.

    On both flavours (exchange and auditor databases built from Taler's own SQL
    files, or the model): the same planted misbehaviour is found.
    """
    from taler_ops import sync
    from taler_ops.sim import generator
    tag = f"{os.getpid()}_{time.monotonic_ns() % 10**6}"
    primary, safe, aud = (cluster.createdb(f"{n}_{tag}") for n in ("gp", "gs", "ga"))
    if flavour == "taler":
        for uri in (primary, safe):
            build_taler_exchange(uri, sql_root=require_taler_sql())
    dbinit.exchange_dbinit(primary)
    dbinit.exchange_dbinit(safe, role="safe-copy")
    make_auditor_db(aud, flavour)
    record_path = tmp_path / "planted.json"
    generator.bulk(primary, 3000, seed=7, now_us=GEN_NOW, inject=list(FINDING_OF),
                   record_path=str(record_path))
    sync.sync_once(primary, safe)
    record = json.loads(record_path.read_text())
    report = audit.run(safe, aud, now_us=GEN_NOW)
    assert report["role"] == "safe-copy"
    assert found(report) == sorted((FINDING_OF[e["kind"]], e["table"], e["serial"])
                                   for e in record if e["kind"] != "reserve_balance_mismatch")
    with pytest.raises(audit.UsageError, match="refused on a safe copy"):
        audit.run(safe, aud, internal=True)


def test_safe_copy_audit_stops_at_the_last_complete_sync_pass(cluster):
    """Rows past sync_watermarks.complete_serial (the last complete pass) wait."""
    tag = f"{os.getpid()}_{time.monotonic_ns() % 10**6}"
    safe, aud = cluster.createdb(f"cs_{tag}"), cluster.createdb(f"ca_{tag}")
    dbinit.exchange_dbinit(safe, role="safe-copy")
    dbinit.auditor_dbinit(aud)
    h = History(safe)
    d = h.denomination()
    _, uuid, _ = h.reserve("1.01")
    h.withdraw(uuid, d, "1.01")
    q(safe, """INSERT INTO taler_ops.sync_watermarks (table_name, last_serial, complete_serial)
               VALUES ('reserves', 1, 1), ('reserves_in', 1, 1), ('reserves_out', 1, 1)""")
    # Mid-pass: a wire_out copied, its aggregation_tracking rows not yet.
    wo = h.wire_out([], "5")
    over = h.withdraw(uuid, d, "1.01")
    h.close_conn()
    first = audit.run(safe, aud, now_us=NOW)
    assert first["bounded_by"] == "sync cut" and first["findings"] == []
    assert progress(aud)["reserves_reserve_out_serial_id"] == 2
    assert "aggregation_last_wire_out_serial_id" not in progress(aud)
    q(safe, """UPDATE taler_ops.sync_watermarks SET complete_serial = 2
                WHERE table_name = 'reserves_out'""")
    q(safe, """INSERT INTO taler_ops.sync_watermarks (table_name, last_serial, complete_serial)
               VALUES ('wire_out', 1, 1)""")
    second = audit.run(safe, aud, now_us=NOW)
    assert found(second) == sorted([("reserve_balance_insufficient", "reserves_out", over),
                                    ("row_inconsistency", "wire-fee", T0 + DAY),  # no fee
                                    ("wire_out_inconsistency", "wire_out", wo)])


def test_a_run_on_a_safe_copy_records_what_it_saw_of_the_sync(cluster):
    """taler_ops.audit_runs keeps, per run, when the sync last copied a row and how many
    copied rows wait beyond the audit's cut; the report turns it into the sync chart."""
    from taler_ops.audit import report as report_mod
    tag = f"{os.getpid()}_{time.monotonic_ns() % 10**6}"
    safe, aud = cluster.createdb(f"ss_{tag}"), cluster.createdb(f"sa_{tag}")
    dbinit.exchange_dbinit(safe, role="safe-copy")
    dbinit.auditor_dbinit(aud)
    q(safe, """INSERT INTO taler_ops.sync_watermarks
                 (table_name, last_serial, complete_serial, updated_tsz)
               VALUES ('reserves', 0, 0, '2026-01-01 00:00:00Z'),
                      ('wire_out', 5, 3, '2026-01-01 00:10:00Z')""")
    audit.run(safe, aud, now_us=NOW)
    rows = q(aud, "SELECT to_char(sync_last_copy_tsz AT TIME ZONE 'UTC', "
                  "'YYYY-MM-DD HH24:MI:SS'), sync_rows_beyond_cut, runs "
                  "FROM taler_ops.audit_runs")
    assert rows == [("2026-01-01 00:10:00", 2, 1)]
    model = report_mod.collect(aud)
    point, = model["history"]["points"]
    ended = datetime.datetime.strptime(point["ended"], "%Y-%m-%d %H:%M:%SZ")
    # the run ended a fraction of a second after the second its time shows
    assert 0 <= point["sync_age_seconds"] - (
        ended - datetime.datetime(2026, 1, 1, 0, 10)).total_seconds() <= 1
    assert point["sync_rows_beyond_cut"] == 2
    assert "Sync staleness" in report_mod.charts(model)["sync_time"]


def test_audit_runs_with_the_auditor_roles_privileges_only(cluster, exchange_db):
    """As the safe_copy role grants: SELECT on exchange and _v, DML on auditor."""
    dbinit.auditor_dbinit(exchange_db)
    h = History(exchange_db)
    d = h.denomination()
    _, uuid, _ = h.reserve("1")
    over = h.withdraw(uuid, d, "1.01")
    h.close_conn()
    role = f"aud_{os.getpid()}_{time.monotonic_ns() % 10**6}"
    q(exchange_db, f"CREATE ROLE {role} LOGIN")
    for stmt in ("GRANT USAGE ON SCHEMA exchange, _v, auditor, taler_ops TO {r}",
                 "GRANT SELECT ON ALL TABLES IN SCHEMA exchange TO {r}",
                 "GRANT SELECT ON ALL TABLES IN SCHEMA taler_ops TO {r}",
                 "GRANT SELECT ON ALL TABLES IN SCHEMA _v TO {r}",
                 "GRANT SELECT, INSERT, UPDATE, DELETE, TRUNCATE ON ALL TABLES IN SCHEMA auditor "
                 "TO {r}",
                 # the audit's own per-coin state beside Taler's schema (not the sync's tables)
                 "GRANT INSERT, UPDATE, DELETE ON taler_ops.audit_coins, taler_ops.audit_runs "
                 "TO {r}"):
        q(exchange_db, stmt.format(r=role))
    uri = exchange_db.replace("postgresql://postgres@", f"postgresql://{role}@")
    report = audit.run(uri, uri, now_us=NOW)
    assert found(report) == [("reserve_balance_insufficient", "reserves_out", over)]
    assert audit.run(uri, uri, now_us=NOW)["findings"] == []
