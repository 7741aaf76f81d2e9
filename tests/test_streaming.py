"""Streaming replication: the ingres copy as a hot standby of the exchange primary.

status reports the standby (pg_is_in_recovery, WAL receiver, physical slot on
the publisher); the sync refuses (exit 5, nothing written) while the standby
is at a newer schema patch than the safe copy.
"""

import json

import psycopg
import pytest

import sync_data
from conftest import wait_for
from pgcluster import Cluster
from sync_helpers import execute
from taler_ops import sync
from taler_ops.ingres import replication
from taler_ops.schema import dbinit, exchange_schema
from taler_ops.errors import DatabaseNotReady

SLOT = "taler_auditor_ingres"


@pytest.fixture(scope="module")
def streaming():
    """An exchange primary with a physical slot and a hot standby cloned from it."""
    primary = Cluster("stream-primary").start()
    standby = Cluster("stream-standby")
    try:
        exchange = primary.createdb("taler_exchange")
        dbinit.exchange_dbinit(exchange, role="primary")
        safe = primary.createdb("safe")
        dbinit.exchange_dbinit(safe, role="safe-copy")
        standby.start_standby_of(primary, slot=SLOT)
        yield primary, standby, exchange, standby.uri("taler_exchange"), safe
    finally:
        standby.destroy()
        primary.destroy()


def _replayed(primary_uri, standby_uri):
    """Wait like an upgrade's drain step would: the standby replayed the primary's WAL end."""
    with psycopg.connect(primary_uri, autocommit=True) as pconn, \
            psycopg.connect(standby_uri, autocommit=True) as sconn:
        lsn = replication.current_wal_lsn(pconn)
        wait_for(lambda: replication.standby_replayed(sconn, lsn))
        wait_for(lambda: replication.slot_confirmed(pconn, SLOT, lsn))


def _confs(conf, exchange, ingres, safe):
    return [conf(f"{name}.conf", {"exchangedb-postgres": {"CONFIG": uri}})
            for name, uri in (("pub", exchange), ("ing", ingres), ("safe", safe))]


def test_status_reports_the_standby_and_its_physical_slot(streaming, conf, cli, tmp_path):
    primary, standby, exchange, ingres, safe = streaming
    pub, ing, dst = _confs(conf, exchange, ingres, safe)
    wait_for(lambda: execute(ingres, "SELECT status FROM pg_stat_wal_receiver") == [("streaming",)])
    out = cli("status", "-p", pub, "--slot", SLOT, "-s", ing, "-d", dst, "--json")
    report = json.loads(out.stdout)
    assert out.returncode == 0, report["problems"]
    assert report["ingres"]["mode"] == "streaming"
    assert report["ingres"]["instance"]["in_recovery"] is True
    assert "subscriptions" not in report["ingres"]
    rx = report["ingres"]["standby"]
    assert (rx["status"], rx["slot_name"], rx["replay_paused"]) == ("streaming", SLOT, False)
    [slot] = report["publisher"]["slots"]
    assert (slot["slot_name"], slot["slot_type"], slot["active"], slot["sender_state"]) == \
        (SLOT, "physical", True, "streaming")
    assert slot["wal_status"] == "reserved"
    table = cli("status", "-p", pub, "-s", ing, "--table")
    assert "standby (streaming): receiver streaming" in table.stdout
    assert "ingres     up (PostgreSQL 15" in table.stdout and "streaming replication" in table.stdout
    prom = tmp_path / "m.prom"
    assert cli("status", "-s", ing, "--metrics-textfile", prom).returncode == 0
    assert "taler_ops_standby_receiver_up 1.0" in prom.read_text()


def test_sync_copies_from_the_standby_and_refuses_a_newer_schema(streaming, conf, cli):
    primary, standby, exchange, ingres, safe = streaming
    _, ing, dst = _confs(conf, exchange, ingres, safe)
    sync_data.populate(exchange, 5)
    _replayed(exchange, ingres)
    first = cli("sync", "-s", ing, "-d", dst, "-t")
    assert first.returncode == 0, first.stderr
    assert execute(safe, "SELECT count(*) FROM exchange.reserves") == [(5,)]

    # The exchange moves to a schema patch the safe copy does not have yet: the
    # standby follows by itself, and the sync stops before copying anything.
    execute(exchange, "SELECT _v.register_patch('model-exchange-9999')")
    sync_data.populate(exchange, 2, start=6)
    _replayed(exchange, ingres)
    marks = execute(safe, "SELECT table_name, last_serial FROM taler_ops.sync_watermarks ORDER BY 1")
    refused = cli("sync", "-s", ing, "-d", dst, "-t")
    assert refused.returncode == 5, refused.stderr
    current = exchange_schema.PATCHES[-1].name
    assert (f"the safe copy is at {current}, ingres at model-exchange-9999: run the upgrade"
            in refused.stderr)
    assert "unknown to this taler-ops" in refused.stderr
    assert execute(safe, "SELECT count(*) FROM exchange.reserves") == [(5,)]
    assert execute(safe, "SELECT table_name, last_serial FROM taler_ops.sync_watermarks "
                         "ORDER BY 1") == marks
    with pytest.raises(DatabaseNotReady):
        sync.sync_once(ingres, safe)

    execute(exchange, "DELETE FROM _v.patches WHERE patch_name = 'model-exchange-9999'")
    _replayed(exchange, ingres)
    again = cli("sync", "-s", ing, "-d", dst, "-t")
    assert again.returncode == 0, again.stderr
    assert execute(safe, "SELECT count(*) FROM exchange.reserves") == [(7,)]


def test_the_sync_writes_nothing_on_the_standby(streaming):
    """A standby refuses every write; the sync's source transaction is READ ONLY anyway."""
    primary, standby, exchange, ingres, safe = streaming
    with pytest.raises(psycopg.errors.ReadOnlySqlTransaction):
        execute(ingres, "INSERT INTO exchange.extensions (name) VALUES ('standby-was-here')")
    with pytest.raises(psycopg.errors.ReadOnlySqlTransaction):
        execute(ingres, "CREATE TABLE exchange.sync_was_here ()")
    sync_data.populate(exchange, 1, start=8)
    _replayed(exchange, ingres)
    assert sync.sync_once(ingres, safe)["tables"]["reserves"]["copied"] == 1


def test_status_flags_a_standby_without_its_primary(streaming, conf, cli):
    primary, standby, exchange, ingres, safe = streaming
    _, ing, _ = _confs(conf, exchange, ingres, safe)
    primary.stop()
    try:
        def unhealthy():
            out = cli("status", "-s", ing, "--json")
            return out.returncode == 1 and json.loads(out.stdout)
        report = wait_for(unhealthy)
        assert report["ingres"]["mode"] == "streaming"
        assert any("WAL receiver" in p for p in report["problems"]), report["problems"]
    finally:
        primary.start_existing()
    wait_for(lambda: execute(ingres, "SELECT status FROM pg_stat_wal_receiver") == [("streaming",)],
             timeout=60)
