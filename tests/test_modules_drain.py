"""taler_replication_drain: the upgrade's drain step, against a real subscription."""

import psycopg

from ansible_runner import run_module


def _login(uri):
    """login_* options from a tests/pgcluster URI (socket directory and port)."""
    info = psycopg.conninfo.conninfo_to_dict(uri)
    return dict(login_host=info["host"], login_port=int(info["port"]),
                login_user=info.get("user", "postgres"), login_db=info["dbname"])


def test_drain_waits_for_the_subscriber_and_fails_clearly_when_it_cannot(replication_pair):
    exchange, ingres, _ = replication_pair
    with psycopg.connect(exchange, autocommit=True) as conn:
        conn.execute("INSERT INTO exchange.extensions (name, manifest) VALUES ('drain', NULL)")
    drained = run_module("taler_replication_drain", dict(_login(exchange), slot="taler_sub",
                                                         timeout=30))
    assert drained.ok, drained
    res = drained.result
    assert res["changed"] is False
    with psycopg.connect(exchange) as conn:
        assert conn.execute("SELECT pg_wal_lsn_diff(%s::pg_lsn, %s::pg_lsn) >= 0",
                            (res["confirmed_lsn"], res["target_lsn"])).fetchone()[0]
    # Confirmed means applied: the row is on the ingres copy already.
    with psycopg.connect(ingres) as conn:
        assert conn.execute("SELECT count(*) FROM exchange.extensions WHERE name = 'drain'"
                            ).fetchone()[0] == 1

    with psycopg.connect(ingres, autocommit=True) as conn:
        conn.execute("ALTER SUBSCRIPTION taler_sub DISABLE")
    with psycopg.connect(exchange, autocommit=True) as conn:
        conn.execute("INSERT INTO exchange.extensions (name, manifest) VALUES ('stuck', NULL)")
    stuck = run_module("taler_replication_drain", dict(_login(exchange), slot="taler_sub",
                                                       timeout=1))
    assert not stuck.ok
    assert "is the subscription enabled" in stuck.result["msg"]

    missing = run_module("taler_replication_drain", dict(_login(exchange), slot="no_such_slot",
                                                         timeout=1))
    assert not missing.ok and "no replication slot 'no_such_slot'" in missing.result["msg"]
