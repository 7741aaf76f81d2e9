"""The audit run by run: increments and progress points, dry runs, suppressed findings,
auditor-dbinit -r, the bounded run history, --settle and rows in flight, a small state
cache, and an auditor database on another server."""

import datetime
import os
import time

import psycopg

from audit_helpers import auditor_flavour, dbs, hist  # noqa: F401 (fixtures)
from audit_helpers import (GEN_NOW, NOW, all_findings, clean_history, found, make_auditor_db,
                          progress, q, run)
from audit_history import DAY, T0, History
from taler_build import require_taler_sql
from taler_ops import audit
from taler_ops.schema import dbinit


# -- incrementality ----------------------------------------------------------------------------

def test_second_run_adds_nothing_and_new_traffic_is_examined_alone(dbs, hist):
    d = clean_history(hist)
    first = run(dbs)
    before = (progress(dbs[1]), first["balances"], all_findings(dbs[1]))
    again = run(dbs)
    assert again["rows_examined"] == 0 and not again["progress_moved"]
    assert again["findings"] == []
    assert (progress(dbs[1]), again["balances"], all_findings(dbs[1])) == before
    # More traffic: one reserve credited in this increment, overdrawn in the next.
    pub, uuid, _ = hist.reserve("1.01")
    hist.withdraw(uuid, d, "1.01")
    third = run(dbs)
    assert third["checks"]["reserves"]["rows_examined"] == {
        "reserves": 1, "reserves_in": 1, "reserves_out": 1}
    assert third["checks"]["coins"]["rows_examined"] == {"reserves_out": 1}
    assert third["findings"] == []
    over = hist.withdraw(uuid, d, "1.01")
    fourth = run(dbs)
    assert found(fourth) == [("reserve_balance_insufficient", "reserves_out", over)]
    assert fourth["checks"]["reserves"]["progress_after"]["reserves_reserve_out_serial_id"] == over + 1


def test_audit_with_auditor_schema_in_the_exchange_database(exchange_db):
    dbinit.auditor_dbinit(exchange_db)
    h = History(exchange_db)
    d = h.denomination()
    _, uuid, _ = h.reserve("1")
    over = h.withdraw(uuid, d, "1.01")
    h.close_conn()
    report = audit.run(exchange_db, exchange_db, now_us=NOW)
    assert found(report) == [("reserve_balance_insufficient", "reserves_out", over)]
    assert report["currency"] is None
    assert report["findings"][0]["inconsistency_amount"] == {"val": 0, "frac": 1_000_000}


def test_dry_run_stores_nothing(dbs, hist):
    d = hist.denomination()
    _, uuid, _ = hist.reserve("1")
    hist.withdraw(uuid, d, "1.01")
    report = run(dbs, dry_run=True, internal=True)
    assert report["dry_run"] and len(report["findings"]) == 1
    assert progress(dbs[1]) == {} and all_findings(dbs[1]) == []
    assert len(run(dbs)["findings"]) == 1


def test_suppressed_findings_are_neither_open_nor_reported_again(dbs, hist):
    """Taler's auditor service sets ``suppressed``; the audit honours it."""
    pub, uuid, _ = hist.reserve("3", expiration=NOW - 2 * DAY, current_balance="2")
    first = run(dbs, internal=True)
    assert sorted(first["open_findings_by_kind"].items()) == [
        ("reserve_balance_summary_wrong", 1), ("reserve_not_closed", 1)]
    q(dbs[1], "UPDATE auditor.auditor_reserve_not_closed_inconsistency SET suppressed = TRUE")
    q(dbs[1], "UPDATE auditor.auditor_reserve_balance_summary_wrong_inconsistency "
              "SET suppressed = TRUE")
    again = run(dbs, internal=True, now_us=NOW + DAY)
    assert again["findings"] == [] and again["open_findings_by_kind"] == {}
    from taler_ops.monitor import status
    counts = status.audit(dbs[1])["findings"]
    assert counts["auditor_reserve_not_closed_inconsistency"] == 0
    assert counts["auditor_reserve_balance_summary_wrong_inconsistency"] == 0


def test_restart_clears_the_audit_and_the_rerun_finds_the_same(dbs, hist, auditor_flavour):
    """auditor-dbinit -r: what Taler's restart.sql clears, and taler_ops.audit_coins."""
    from taler_ops.schema import auditor_schema
    d = hist.denomination(coin="1")
    _, uuid, _ = hist.reserve("1")
    hist.withdraw(uuid, d, "1.01")
    coin = hist.coin(d)
    hist.deposit(coin, "0.6")
    hist.deposit(coin, "0.6")
    first = run(dbs)
    # overspent coin, and its denomination's only coin: an emergency by value too
    assert len(first["findings"]) == 3
    assert q(dbs[1], "SELECT count(*) FROM taler_ops.audit_coins") == [(1,)]
    assert q(dbs[1], "SELECT findings_open FROM taler_ops.audit_runs") == [(3,)]
    sql_dir = (os.path.join(require_taler_sql(), "auditor") if auditor_flavour == "taler"
               else None)
    assert dbinit.auditor_dbinit(dbs[1], restart=True, sql_dir=sql_dir)["restarted"]
    for table in auditor_schema.RESTART_CLEARS:
        assert q(dbs[1], f"SELECT count(*) FROM auditor.{table}") == [(0,)], table
    assert q(dbs[1], "SELECT count(*) FROM taler_ops.audit_coins") == [(0,)]
    # the run history counted findings the restart deleted: it starts again too
    assert q(dbs[1], "SELECT count(*) FROM taler_ops.audit_runs") == [(0,)]
    again = run(dbs)
    assert again["findings"] == first["findings"]
    assert again["balances"] == first["balances"]


def test_the_run_history_stays_bounded(cluster, monkeypatch):
    """An unchanged run merges only into a row that started less than a minute before;
    adding a row prunes rows older than KEEP_DAYS and beyond KEEP_ROWS."""
    from taler_ops.audit import history as run_history
    aud = cluster.createdb(f"rh_{os.getpid()}_{time.monotonic_ns() % 10**6}")
    dbinit.auditor_dbinit(aud)
    now = datetime.datetime.now(datetime.timezone.utc)
    with psycopg.connect(aud) as conn:
        assert run_history.record(conn, now - datetime.timedelta(days=40), 5) == "added"
        conn.execute("UPDATE taler_ops.audit_runs SET ended_tsz = now() - interval '40 days'")
        assert run_history.record(conn, now - datetime.timedelta(minutes=2), 1) == "added"
        # the 40-day-old row went when the second was added
        assert conn.execute("SELECT count(*) FROM taler_ops.audit_runs").fetchone()[0] == 1
        # unchanged, but the newest row started 2 minutes before: a new row
        assert run_history.record(conn, now, 1) == "added"
        assert run_history.record(conn, now, 1) == "merged"
        conn.execute("INSERT INTO auditor.auditor_row_inconsistency (row_table, diagnostic, "
                     "problem_row_id) VALUES ('reserves', 'x', 1)")
        assert run_history.record(conn, now, 1) == "added"      # a count changed
        monkeypatch.setattr(run_history, "KEEP_ROWS", 2)
        conn.execute("UPDATE auditor.auditor_row_inconsistency SET suppressed = TRUE")
        assert run_history.record(conn, now, 1) == "added"
        assert conn.execute("SELECT runs, findings_open, findings_suppressed FROM "
                            "taler_ops.audit_runs ORDER BY run_id").fetchall() == [(1, 1, 0),
                                                                                   (1, 0, 1)]


# -- rows in flight and --settle ------------------------------------------------------------

def _in_flight_overdraft(dbs, hist):
    """A withdrawal with a low serial still in flight while a higher one is committed."""
    d = hist.denomination()
    _, poor, _ = hist.reserve("0.5")
    _, rich, _ = hist.reserve("5")
    flight = psycopg.connect(dbs[0])
    flight.execute("INSERT INTO exchange.reserves_out (h_blind_ev, denominations_serial, "
                   "denom_sig, reserve_uuid, reserve_sig, execution_date, amount_with_fee) "
                   "VALUES (%s, %s, 'x', %s, %s, %s, ROW(1, 1000000))",
                   (os.urandom(64), d, poor, os.urandom(64), T0))
    hist.withdraw(rich, d, "1.01")
    return flight


def test_without_settle_a_row_committed_late_below_progress_is_missed(dbs, hist):
    """The hazard --settle exists for (Taler's helpers share it)."""
    flight = _in_flight_overdraft(dbs, hist)
    assert run(dbs)["findings"] == []
    flight.commit()
    flight.close()
    assert run(dbs)["findings"] == [], "serial 1 lies below the progress point now"


def _maxima_read(monkeypatch):
    """An event set once the audit has read the tables' maxima (and starts to settle)."""
    import threading
    read = threading.Event()
    real = audit.table_maxima

    def spy(ex):
        maxima = real(ex)
        read.set()
        return maxima
    monkeypatch.setattr(audit, "table_maxima", spy)
    return read


def test_settle_waits_for_rows_in_flight(dbs, hist, monkeypatch):
    import threading
    flight = _in_flight_overdraft(dbs, hist)
    read = _maxima_read(monkeypatch)
    out = {}
    worker = threading.Thread(target=lambda: out.update(report=run(dbs, settle=3.0)))
    worker.start()
    assert read.wait(60), "the audit never read the maxima"
    flight.commit()           # while the audit settles
    flight.close()
    worker.join()
    assert found(out["report"]) == [("reserve_balance_insufficient", "reserves_out", 1)]
    assert out["report"]["bounded_by"] == "maxima settled for 3.0 s"


def test_internal_with_settle_skips_what_committed_during_the_wait(dbs, hist, monkeypatch):
    """A live primary: a withdrawal and its current_balance update land while the audit
    waits; the audit state does not hold them yet, so that reserve is compared next run."""
    import threading
    d = hist.denomination(coin="1", fee_withdraw="0.01")
    pub, uuid, _ = hist.reserve("5", current_balance="3.99")
    hist.withdraw(uuid, d, "1.01")
    read = _maxima_read(monkeypatch)
    out = {}
    worker = threading.Thread(
        target=lambda: out.update(report=run(dbs, internal=True, settle=3.0)))
    worker.start()
    assert read.wait(60), "the audit never read the maxima"
    with psycopg.connect(dbs[0]) as conn:       # the exchange at work: one transaction
        conn.execute("INSERT INTO exchange.reserves_out (h_blind_ev, denominations_serial, "
                     "denom_sig, reserve_uuid, reserve_sig, execution_date, amount_with_fee) "
                     "VALUES (%s, %s, 'x', %s, %s, %s, ROW(1, 1000000))",
                     (os.urandom(64), d, uuid, os.urandom(64), T0))
        conn.execute("UPDATE exchange.reserves SET current_balance = ROW(2, 98000000) "
                     "WHERE reserve_uuid = %s", (uuid,))
    worker.join()
    assert out["report"]["findings"] == []
    later = run(dbs, internal=True)
    assert later["findings"] == [] and later["checks"]["reserves"]["rows_examined"] == {
        "reserves_out": 1}


def test_small_state_cache_gives_the_same_results(dbs, cluster, tmp_path, monkeypatch,
                                                  auditor_flavour):
    """State written out and reloaded mid-increment (large backlogs) changes nothing."""
    from taler_ops.audit import coins as audit_coins, reserves as audit_reserves
    from taler_ops.sim import generator
    record_path = tmp_path / "planted.json"
    generator.bulk(dbs[0], 3000, seed=8, now_us=GEN_NOW, inject=["coin_overspend",
                                                                "reserve_overdraft"],
                  record_path=str(record_path))
    other = cluster.createdb(f"cache_{os.getpid()}_{time.monotonic_ns() % 10**6}")
    make_auditor_db(other, auditor_flavour)
    normal = run(dbs, now_us=GEN_NOW)
    monkeypatch.setattr(audit_reserves, "CACHE_LIMIT", 7)
    monkeypatch.setattr(audit_coins, "CACHE_LIMIT", 7)
    small = audit.run(dbs[0], other, now_us=GEN_NOW, currency="KUDOS")
    assert len(normal["findings"]) == 2
    assert small["findings"] == normal["findings"]
    assert small["balances"] == normal["balances"]
    state = ("SELECT reserve_pub, reserve_balance::text, reserve_loss::text, "
             "withdraw_fee_balance::text, close_fee_balance::text, expiration_date "
             "FROM auditor.auditor_reserves ORDER BY 1")
    assert q(other, state) == q(dbs[1], state)
    coins = "SELECT coin_pub, spent::text, refunded::text FROM taler_ops.audit_coins ORDER BY 1"
    assert q(other, coins) == q(dbs[1], coins)
    denoms = ("SELECT denom_pub_hash, denom_balance::text, denom_loss::text, num_issued, "
              "denom_risk::text, recoup_loss::text FROM auditor.auditor_denomination_pending "
              "ORDER BY 1")
    assert q(other, denoms) == q(dbs[1], denoms) and q(other, denoms)


def test_auditor_database_on_another_server(dbs, hist):
    from pgcluster import Cluster
    other = Cluster("audit-aud").start()
    try:
        aud = other.createdb("auditor")
        dbinit.auditor_dbinit(aud)
        d = hist.denomination()
        _, uuid, _ = hist.reserve("1")
        over = hist.withdraw(uuid, d, "1.01")
        assert found(audit.run(dbs[0], aud, now_us=NOW)) == [
            ("reserve_balance_insufficient", "reserves_out", over)]
        assert audit.run(dbs[0], aud, now_us=NOW)["findings"] == []
        assert progress(aud)["reserves_reserve_out_serial_id"] == over + 1
        assert progress(dbs[1]) == {}, "the exchange server's auditor database is untouched"
    finally:
        other.destroy()
