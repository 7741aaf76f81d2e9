"""taler_standby_replay: the upgrade's wait for a streaming ingres to replay the drained WAL,
against a real primary and a hot standby cloned from it."""

import os

import psycopg
import pytest
import yaml

from ansible_runner import ROOT, run_module, run_tasks
from conftest import wait_for
from pgcluster import Cluster
from taler_ops.ingres import replication

SLOT = "taler_auditor_ingres"


@pytest.fixture(scope="module")
def standby_pair():
    """A primary with a table and a physical slot, and a hot standby streaming through it."""
    primary = Cluster("replay-primary").start()
    standby = Cluster("replay-standby")
    try:
        exchange = primary.createdb("taler_exchange")
        with psycopg.connect(exchange, autocommit=True) as conn:
            conn.execute("CREATE TABLE marks (name text)")
        standby.start_standby_of(primary, slot=SLOT)
        yield exchange, standby.uri("taler_exchange")
    finally:
        standby.destroy()
        primary.destroy()


def _login(uri):
    """login_* options from a tests/pgcluster URI (socket directory and port)."""
    info = psycopg.conninfo.conninfo_to_dict(uri)
    return dict(login_host=info["host"], login_port=int(info["port"]),
                login_user=info.get("user", "postgres"), login_db=info["dbname"])


def _write(primary_uri, name):
    """Commit a row on the primary; the WAL insert position after it (what the drain reads)."""
    with psycopg.connect(primary_uri, autocommit=True) as conn:
        conn.execute("INSERT INTO marks VALUES (%s)", (name,))
        return replication.current_wal_lsn(conn)


def _count(uri, name):
    with psycopg.connect(uri) as conn:
        return conn.execute("SELECT count(*) FROM marks WHERE name = %s", (name,)).fetchone()[0]


def test_returns_once_the_standby_replayed_the_position(standby_pair):
    primary, standby = standby_pair
    target = _write(primary, "replayed")
    done = run_module("taler_standby_replay", dict(_login(standby), lsn=target, timeout=60))
    assert done.ok, done
    res = done.result
    assert res["changed"] is False and res["target_lsn"] == target and res["paused"] is False
    with psycopg.connect(standby) as conn:
        assert conn.execute("SELECT %s::pg_lsn >= %s::pg_lsn",
                            (res["replayed_lsn"], target)).fetchone()[0]
    # Replayed means readable on the standby: what the sync would copy is there.
    assert _count(standby, "replayed") == 1

    # Reads only: check mode waits the same way.
    checked = run_module("taler_standby_replay", dict(_login(standby), lsn=target, timeout=60),
                         check=True)
    assert checked.ok and checked.result["changed"] is False, checked


def test_times_out_naming_both_positions_while_replay_is_paused(standby_pair):
    primary, standby = standby_pair
    with psycopg.connect(standby, autocommit=True) as conn:
        conn.execute("SELECT pg_wal_replay_pause()")
        try:
            target = _write(primary, "held back")
            # Received but not replayed: the physical slot confirms it, the standby lacks the row.
            wait_for(lambda: conn.execute(
                "SELECT pg_last_wal_receive_lsn() >= %s::pg_lsn", (target,)).fetchone()[0],
                what="the standby receiving the WAL")
            stuck = run_module("taler_standby_replay", dict(_login(standby), lsn=target,
                                                            timeout=1))
            assert not stuck.ok
            res = stuck.result
            assert res["changed"] is False and res["paused"] is True
            assert res["target_lsn"] == target and res["replayed_lsn"] != target
            assert (f"the standby replayed only up to {res['replayed_lsn']} of {target}"
                    in res["msg"])
            assert "replay is paused (SELECT pg_wal_replay_resume() on it resumes it)" in res["msg"]
            assert res["waited"] >= 1
            assert _count(standby, "held back") == 0
        finally:
            conn.execute("SELECT pg_wal_replay_resume()")
    resumed = run_module("taler_standby_replay", dict(_login(standby), lsn=target, timeout=60))
    assert resumed.ok and resumed.result["paused"] is False, resumed
    assert _count(standby, "held back") == 1


def test_refuses_a_server_that_is_not_a_standby_and_a_malformed_position(standby_pair):
    primary, standby = standby_pair
    target = _write(primary, "primary")
    refused = run_module("taler_standby_replay", dict(_login(primary), lsn=target, timeout=30))
    assert not refused.ok
    res = refused.result
    assert "is not a hot standby (pg_is_in_recovery() is false" in res["msg"], res
    assert "port=" in res["msg"] and res["exit_code"] == 2     # Taler's "invalid argument"
    assert "waited" not in res     # refused at once, not after the timeout

    malformed = run_module("taler_standby_replay", dict(_login(standby), lsn="0/XYZ", timeout=1))
    assert not malformed.ok
    assert "'0/XYZ' is not a WAL position" in malformed.result["msg"]


def _upgrade_task(name):
    """A task of playbooks/upgrade.yml's drain play, as written there."""
    with open(os.path.join(ROOT, "playbooks", "upgrade.yml")) as fh:
        plays = yaml.safe_load(fh)
    [drain] = [p for p in plays if p.get("name", "").startswith("2. Drain")]

    def walk(tasks):
        for task in tasks:
            yield task
            yield from walk(task.get("block", []))
    [task] = [t for t in walk(drain["tasks"]) if t.get("name") == name]
    return task


def test_upgrade_playbook_waits_with_the_module_for_each_drained_position(standby_pair):
    """upgrade.yml's replay step, its own text, with the variables its drain play has."""
    primary, standby = standby_pair
    task = _upgrade_task("Wait until the standby has replayed it too "
                         "(streaming; the sync reads what was replayed)")
    assert "taler_standby_replay" in task
    target = _write(primary, "upgrade")
    login = _login(standby)
    wiring = dict(ingres_socket_dir=login["login_host"], ingres_port=login["login_port"],
                  taler_ingres_admin=login["login_user"], ingres_database=login["login_db"],
                  taler_upgrade_drain_timeout=60,
                  # taler_replication_drain's loop over the exchange hosts: one drained,
                  # one result without a position (e.g. skipped) that is not waited for.
                  __upgrade_drained={"results": [{"target_lsn": target, "changed": False},
                                                 {"skipped": True}]})
    done = run_tasks([task], extra_vars=dict(wiring, taler_ingres_replication="streaming"))
    assert done.ok, done
    [waited] = done.result["results"]
    assert waited["target_lsn"] == target and not waited["changed"], waited
    assert _count(standby, "upgrade") == 1

    logical = run_tasks([task], extra_vars=dict(wiring, taler_ingres_replication="logical"))
    assert logical.ok and all(r.get("skipped") for r in logical.result["results"]), logical
