"""Replication health read from a real publisher/subscriber pair."""

import psycopg

import builders as b
from conftest import wait_for as _wait
from taler_ops.ingres import replication


def test_slot_and_subscription_report_health_and_lag(replication_pair):
    src, dst, ingres = replication_pair
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
