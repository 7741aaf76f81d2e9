"""Outages survived with no loss (issue 9): ingres or safe copy stopped mid-pass,
the exchange -> ingres link cut and restored, a replication slot invalidated."""

import json
import subprocess
import sys
import time

import psycopg
import pytest

from conftest import ROOT, caught_up, publish_replicated_tables, wait_for
from consistency import prefix_problems, same_tables
from tcpproxy import Proxy
from taler_ops.ingres import replication
from taler_ops.schema import dbinit, registry
from taler_ops.sim import generator


def _sync_cmd(src, dst):
    return [sys.executable, "-m", "taler_ops.cli", "sync", "-s", src, "-d", dst, "-t", "-b", "3000"]


def _sync(src, dst):
    return subprocess.run(_sync_cmd(src, dst), cwd=ROOT, capture_output=True, text=True,
                          timeout=600)


def _copied(safe):
    with psycopg.connect(safe, autocommit=True) as conn:
        return conn.execute("SELECT count(*) FROM taler_ops.sync_watermarks "
                            "WHERE last_serial > 0").fetchone()[0]


@pytest.mark.parametrize("victim", ["ingres", "safe-copy"])
def test_server_stopped_mid_pass(victim, own_cluster, cluster, conf):
    # Stopped "immediate" below, which is a crash: with the test clusters' asynchronous commit
    # it may lose the bulk load's last commits that the sync has already seen and copied
    # (a real ingres copy gets them again from the exchange; here nothing resends them).
    down = own_cluster(f"outage-{victim}", synchronous_commit="on")
    if victim == "ingres":
        ingres, safe = down.createdb("ingres"), cluster.createdb("outage_safe_a")
    else:
        ingres, safe = cluster.createdb("outage_ingres_b"), down.createdb("safe")
    dbinit.exchange_dbinit(ingres, role="ingres")
    dbinit.exchange_dbinit(safe, role="safe-copy")
    generator.bulk(ingres, 150_000, seed=5)
    src = conf("i.conf", {"exchangedb-postgres": {"CONFIG": ingres}})
    dst = conf("s.conf", {"exchangedb-postgres": {"CONFIG": safe}})

    proc = subprocess.Popen(_sync_cmd(src, dst), cwd=ROOT, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)
    # Stop it mid-pass: once the safe copy holds the first committed batch.
    wait_for(lambda: proc.poll() is None and _copied(safe) > 0, timeout=120)
    down.stop("immediate")
    out, err = proc.communicate(timeout=300)
    assert proc.returncode == 5, f"rc={proc.returncode}\n{out}\n{err}"  # never 0 on failure
    assert "ERROR" in err

    down.start_existing()
    assert prefix_problems(ingres, safe) == []
    done = _sync(src, dst)
    assert done.returncode == 0, done.stderr
    assert same_tables(ingres, safe) is None


def _subscribe(ingres_uri, host, port, dbname, **options):
    tables = ", ".join(e.qualified for e in registry.REPLICATED)
    opts = ", ".join(f"{k} = {v}" for k, v in dict(disable_on_error="true", **options).items())
    with psycopg.connect(ingres_uri, autocommit=True) as conn:
        conn.execute(f"CREATE SUBSCRIPTION taler_sub CONNECTION 'host={host} port={port} "
                     f"dbname={dbname} user=postgres' PUBLICATION taler_pub WITH ({opts})")
        wait_for(lambda: conn.execute(
            "SELECT count(*) = 0 FROM pg_subscription_rel WHERE srsubstate <> 'r'").fetchone()[0],
            timeout=120)
    return tables


def test_replication_link_cut_and_restored(own_cluster, cluster, conf, cli):
    ex, ing = own_cluster("cut-exchange"), own_cluster("cut-ingres")
    exchange, ingres = ex.createdb("exchange"), ing.createdb("ingres")
    safe = cluster.createdb("cut_safe")
    dbinit.exchange_dbinit(exchange)
    dbinit.exchange_dbinit(ingres, role="ingres")
    dbinit.exchange_dbinit(safe, role="safe-copy")
    publish_replicated_tables(exchange)
    link = Proxy("127.0.0.1", ex.port).start()
    try:
        _subscribe(ingres, "127.0.0.1", link.port, "exchange")
        generator.bulk(exchange, 5000, seed=1)
        caught_up(exchange)
        src = conf("i.conf", {"exchangedb-postgres": {"CONFIG": ingres}})
        dst = conf("s.conf", {"exchangedb-postgres": {"CONFIG": safe}})
        pub = conf("p.conf", {"exchangedb-postgres": {"CONFIG": exchange}})
        assert _sync(src, dst).returncode == 0

        link.cut()
        generator.bulk(exchange, 5000, seed=2)
        with psycopg.connect(exchange, autocommit=True) as conn:
            wait_for(lambda: not replication.publisher_slots(conn, "taler_sub")[0]["active"])
        report = json.loads(cli("status", "-p", pub, "-s", src, "-d", dst, "--json").stdout)
        assert not report["healthy"]
        assert "slot taler_sub has no consumer" in report["problems"]
        # PostgreSQL 15 counts a lost WAL stream as an apply error: disable_on_error
        # disables the subscription, and status says so.
        assert any("subscription taler_sub is disabled" in p for p in report["problems"])
        assert report["publisher"]["slots"][0]["lag_bytes"] > 0
        assert _sync(src, dst).returncode == 0   # what ingres has is still copied

        link.restore()
        # No link keeper runs here (tests/test_link_keeper.py has it): the runbook's one step.
        with psycopg.connect(ingres, autocommit=True) as conn:
            conn.execute("ALTER SUBSCRIPTION taler_sub ENABLE")
        caught_up(exchange)
        assert _sync(src, dst).returncode == 0
        assert same_tables(exchange, safe) is None
        report = json.loads(cli("status", "-p", pub, "-s", src, "-d", dst, "--json").stdout)
        assert report["healthy"], report["problems"]
    finally:
        link.cut()


def test_slot_invalidated_by_max_slot_wal_keep_size(own_cluster, cluster, conf, cli):
    """A lost slot is reported; re-seeding ingres loses nothing on the safe copy."""
    ex = own_cluster("lost-exchange", max_slot_wal_keep_size="1MB", max_wal_size="32MB",
                     min_wal_size="32MB")
    ing = own_cluster("lost-ingres")
    exchange, ingres = ex.createdb("exchange"), ing.createdb("ingres")
    safe = cluster.createdb("lost_safe")
    dbinit.exchange_dbinit(exchange)
    dbinit.exchange_dbinit(ingres, role="ingres")
    dbinit.exchange_dbinit(safe, role="safe-copy")
    publish_replicated_tables(exchange)
    _subscribe(ingres, ex.sockets, ex.port, "exchange")
    generator.bulk(exchange, 3000, seed=1)
    caught_up(exchange)
    src = conf("i.conf", {"exchangedb-postgres": {"CONFIG": ingres}})
    dst = conf("s.conf", {"exchangedb-postgres": {"CONFIG": safe}})
    pub = conf("p.conf", {"exchangedb-postgres": {"CONFIG": exchange}})
    assert _sync(src, dst).returncode == 0

    ing.stop()
    with psycopg.connect(exchange, autocommit=True) as conn:
        def lost():
            generator.bulk(exchange, 20000, seed=int(time.monotonic() * 1000) % 100000)
            conn.execute("SELECT pg_switch_wal()")
            conn.execute("CHECKPOINT")
            return replication.publisher_slots(conn, "taler_sub")[0]["wal_status"] == "lost"
        wait_for(lost, timeout=240, interval=0)
    report = json.loads(cli("status", "-p", pub, "--json").stdout)
    assert any("slot taler_sub is lost" in p for p in report["problems"])

    # Runbook (docs/operations.md): detach the dead subscription, re-seed ingres.
    ing.start_existing()
    with psycopg.connect(ingres, autocommit=True) as conn:
        conn.execute("ALTER SUBSCRIPTION taler_sub DISABLE")
        conn.execute("ALTER SUBSCRIPTION taler_sub SET (slot_name = NONE)")
        conn.execute("DROP SUBSCRIPTION taler_sub")
        conn.execute("TRUNCATE " + ", ".join(e.qualified for e in registry.REPLICATED))
    with psycopg.connect(exchange, autocommit=True) as conn:
        conn.execute("SELECT pg_drop_replication_slot('taler_sub')")
    _subscribe(ingres, ex.sockets, ex.port, "exchange")
    caught_up(exchange)

    assert _sync(src, dst).returncode == 0
    assert same_tables(exchange, safe) is None
    clean = cli("verify", "-s", src, "-d", dst, "--json")
    assert clean.returncode == 0 and json.loads(clean.stdout)["findings"] == []
