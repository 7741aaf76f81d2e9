"""The roles' streaming-replication parts through real ansible-playbook runs.

- ingres's mode check refuses a switch in both directions before anything changes;
- exchange_publisher in streaming mode creates the physical slot and the standby's
  reader role (SELECT only), is idempotent, never logs the reader's password, and
  refuses a logical slot of the same name.
"""

import os
import sys

import psycopg
import pytest

from ansible_runner import run_tasks
from conftest import wait_for
from pgcluster import Cluster
from sync_helpers import execute
from taler_ops.schema import dbinit

CHECK = [{"name": "mode check", "ansible.builtin.include_role":
          {"name": "ingres", "tasks_from": "check_mode"}}]


def _check(data_dir, mode):
    return run_tasks(CHECK, callback="default",
                     extra_vars={"ingres_data_dir": str(data_dir), "ingres_replication": mode})


def _flat(run):
    return " ".join((run.stdout + run.stderr).split())


def test_a_switch_of_the_ingres_mode_is_refused_both_ways(tmp_path):
    data = tmp_path / "ingres"
    assert _check(data, "streaming").ok          # nothing there yet: any mode
    assert _check(data, "logical").ok
    data.mkdir()
    (data / "PG_VERSION").write_text("15\n")
    run = _check(data, "streaming")
    assert not run.ok
    assert (f"ingres at {data} is a logical subscriber (no standby.signal); switching it to "
            "streaming replication is refused and nothing was changed") in _flat(run)
    assert _check(data, "logical").ok
    (data / "standby.signal").touch()
    run = _check(data, "logical")
    assert not run.ok
    assert (f"ingres at {data} is a streaming standby (standby.signal present); switching it "
            "to logical replication is refused") in _flat(run)
    assert _check(data, "streaming").ok
    run = _check(data, "physical")
    # The entry point's argument spec refuses it before the role's own check would.
    assert not run.ok and ("value of ingres_replication must be one of: logical, streaming, "
                           "got: physical") in _flat(run)
    assert sorted(os.listdir(data)) == ["PG_VERSION", "standby.signal"]


@pytest.fixture
def primary():
    c = Cluster("pub-streaming").start()
    try:
        uri = c.createdb("taler_exchange")
        dbinit.exchange_dbinit(uri, role="primary")
        yield c, uri
    finally:
        c.destroy()


READER_PASSWORD = "reader-Secret-4711"


def _publisher(cluster, verbosity=0):
    role = {"name": "exchange_publisher", "ansible.builtin.include_role": {"name": "exchange_publisher"}}
    return run_tasks([role], verbosity=verbosity, extra_vars={
        "exchange_publisher_replication": "streaming",
        "exchange_publisher_login_host": cluster.sockets,
        "exchange_publisher_login_port": cluster.port,
        "exchange_publisher_login_user": "postgres",
        "exchange_publisher_login_db": "taler_exchange",
        "exchange_publisher_replication_password": "repl-Secret-0815",
        "exchange_publisher_subscriber_addresses": ["127.0.0.1/32"],
        "exchange_publisher_slot": "tst_standby",
        "exchange_publisher_standby_readers": [{"name": "tst_reader", "password": READER_PASSWORD}],
        "exchange_publisher_check_hba": False,
        "exchange_publisher_python": sys.executable,
    })


def test_exchange_publisher_prepares_a_primary_for_a_standby(primary):
    cluster, uri = primary
    first = _publisher(cluster, verbosity=1)
    assert first.ok, first
    output = first.stdout + first.stderr
    assert READER_PASSWORD not in output and "repl-Secret-0815" not in output
    assert execute(uri, "SELECT slot_type, restart_lsn IS NOT NULL FROM pg_replication_slots "
                        "WHERE slot_name = 'tst_standby'") == [("physical", True)]
    assert execute(uri, "SELECT count(*) FROM pg_publication") == [(0,)]
    assert execute(uri, "SELECT rolcanlogin, rolreplication, rolsuper FROM pg_roles "
                        "WHERE rolname = 'tst_reader'") == [(True, False, False)]
    assert execute(uri, "SELECT has_table_privilege('tst_reader', 'exchange.reserves', 'SELECT'), "
                        "has_table_privilege('tst_reader', 'exchange.reserves', 'INSERT'), "
                        "has_table_privilege('tst_reader', '_v.patches', 'SELECT'), "
                        "has_table_privilege('tst_reader', 'taler_ops.database_setup', 'SELECT'), "
                        "has_table_privilege('taler_replication', 'exchange.reserves', 'SELECT')") \
        == [(True, False, True, True, False)]
    # The reader's password is the one given (a standby checks it against this hash).
    with open(os.path.join(cluster.data, "pg_hba.conf"), "w") as fh:
        fh.write("local all all trust\nhost all all 127.0.0.1/32 scram-sha-256\n")
    execute(uri, "SELECT pg_reload_conf()")
    tcp = f"host=127.0.0.1 port={cluster.port} dbname=taler_exchange user=tst_reader"

    def refused(password):
        try:
            psycopg.connect(f"{tcp} password={password}").close()
        except psycopg.OperationalError as exc:
            return "password authentication failed" in str(exc)
        return False
    wait_for(lambda: refused("wrong"))      # the reload has taken effect
    with psycopg.connect(f"{tcp} password={READER_PASSWORD}") as conn:
        assert conn.execute("SELECT count(*) FROM exchange.reserves").fetchone() == (0,)

    again = _publisher(cluster)
    assert again.ok, again
    assert [r.get("changed") for r in again.results if r.get("changed")] == []

    execute(uri, "SELECT pg_drop_replication_slot('tst_standby')")
    execute(uri, "SELECT pg_create_logical_replication_slot('tst_standby', 'pgoutput')")
    logical = _publisher(cluster)
    assert not logical.ok
    assert "replication slot tst_standby on the exchange primary is a logical slot" in \
        " ".join((logical.stdout + logical.stderr).split())
