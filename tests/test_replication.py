"""Replication health read from a real publisher/subscriber pair."""

import time

import psycopg
import pytest

import builders as b
from pgcluster import Cluster
from taler_ops import dbinit, registry, replication


def _wait(predicate, timeout=30):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(0.2)
    raise AssertionError("condition not reached in time")


@pytest.fixture
def pair(cluster):
    """exchange primary (session cluster) -> ingres (own cluster), logical replication."""
    ingres = Cluster("ingres").start()
    try:
        src = cluster.createdb("repl_exchange")
        dst = ingres.createdb("repl_ingres")
        dbinit.exchange_dbinit(src)
        dbinit.exchange_dbinit(dst, role="ingres")
        tables = ", ".join(e.qualified for e in registry.REPLICATED)
        with psycopg.connect(src, autocommit=True) as conn:
            conn.execute(f"CREATE PUBLICATION taler_pub FOR TABLE {tables}")
        with psycopg.connect(dst, autocommit=True) as conn:
            conn.execute(
                f"CREATE SUBSCRIPTION taler_sub CONNECTION 'host={cluster.sockets} "
                f"port={cluster.port} dbname=repl_exchange user=postgres' "
                "PUBLICATION taler_pub WITH (disable_on_error = true)")
        yield src, dst, ingres
    finally:
        try:
            with psycopg.connect(dst, autocommit=True) as conn:
                conn.execute("DROP SUBSCRIPTION IF EXISTS taler_sub")
        except psycopg.Error:
            with psycopg.connect(src, autocommit=True) as conn:
                conn.execute("SELECT pg_drop_replication_slot(slot_name) "
                             "FROM pg_replication_slots WHERE slot_name = 'taler_sub'")
        ingres.destroy()
        with psycopg.connect(cluster.uri(), autocommit=True) as conn:
            conn.execute("DROP DATABASE IF EXISTS repl_exchange")


def test_slot_and_subscription_report_health_and_lag(pair):
    src, dst, ingres = pair
    with psycopg.connect(dst, autocommit=True) as conn:
        # The slot alone says nothing while tables are still in their initial copy.
        _wait(lambda: replication.subscriptions(conn)[0]["tables_not_ready"] == 0)
    with psycopg.connect(src, autocommit=True) as conn:
        b.wire_target(conn, "one")
        lsn = replication.current_wal_lsn(conn)
    with psycopg.connect(src, autocommit=True) as conn:
        _wait(lambda: replication.slot_confirmed(conn, "taler_sub", lsn))
        slot = replication.publisher_slots(conn, "taler_sub")[0]
        assert slot["active"] and slot["wal_status"] == "reserved"
        assert slot["slot_type"] == "logical"
    with psycopg.connect(dst, autocommit=True) as conn:
        sub = replication.subscriptions(conn)[0]
        assert sub["name"] == "taler_sub" and sub["enabled"]
        assert sub["worker_pid"] and sub["apply_error_count"] == 0
        assert sub["last_msg_receipt_time"] is not None
        assert b.count(conn, "wire_targets") == 1

    assert replication.instance(dst, "ingres")["up"] is True
    ingres.stop()
    down = replication.instance(dst, "ingres")
    assert down["up"] is False and "cannot connect" in down["error"]
    with psycopg.connect(src, autocommit=True) as conn:
        for i in range(50):
            b.wire_target(conn, f"more{i}")
        lsn = replication.current_wal_lsn(conn)
        slot = _wait(lambda: (s := replication.publisher_slots(conn, "taler_sub")[0])
                     and not s["active"] and s)
        assert slot["lag_bytes"] > 0
        assert not replication.slot_confirmed(conn, "taler_sub", lsn)
    ingres.start_existing()
    with psycopg.connect(src, autocommit=True) as conn:
        _wait(lambda: replication.slot_confirmed(conn, "taler_sub", lsn))
    with psycopg.connect(dst) as conn:
        assert b.count(conn, "wire_targets") == 51
