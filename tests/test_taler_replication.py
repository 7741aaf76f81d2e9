"""Logical replication from a Taler-built primary: Taler's own updates and GC keep working.

Eight replicated tables have no primary key; a publication that publishes
UPDATE/DELETE would make the exchange's own UPDATE and DELETE on them fail.
The publication carries inserts only (roles/exchange_publisher), so Taler's
statements and stored procedures run as always, the ingres copy keeps every
row it received, and the safe copy follows by the sync.
"""

import json

import psycopg
import pytest

from conftest import caught_up, publish_replicated_tables, subscribe
from consistency import same_tables
from pgcluster import Cluster
from taler_build import build_taler_exchange, require_taler_sql
from taler_ops.schema import dbinit, registry
from taler_ops.sim import generator

FAR_FUTURE = 2 ** 62


@pytest.fixture
def taler_topology(cluster):
    """(primary, ingres, safe copy) URIs, all three built from Taler's files."""
    root = require_taler_sql()
    ingres_cluster = Cluster("taler-ingres").start()
    primary = build_taler_exchange(cluster.createdb("taler_repl_primary"), sql_root=root)
    ingres = build_taler_exchange(ingres_cluster.createdb("ingres"), sql_root=root)
    safe = build_taler_exchange(cluster.createdb("taler_repl_safe"), sql_root=root)
    try:
        dbinit.exchange_dbinit(ingres, role="ingres")
        dbinit.exchange_dbinit(safe, role="safe-copy")
        publish_replicated_tables(primary)
        subscribe(ingres, cluster, "taler_repl_primary")
        yield primary, ingres, safe
    finally:
        ingres_cluster.destroy()
        with psycopg.connect(cluster.uri(), autocommit=True) as conn:
            conn.execute("SELECT pg_drop_replication_slot(slot_name) FROM pg_replication_slots "
                         "WHERE slot_name = 'taler_sub'")


def _counts(uri):
    with psycopg.connect(uri) as conn:
        return {e.name: conn.execute(f"SELECT count(*) FROM {e.qualified}").fetchone()[0]
                for e in registry.REPLICATED}


def _sync(conf, cli, ingres, safe):
    src = conf("i.conf", {"exchangedb-postgres": {"CONFIG": ingres}})
    dst = conf("s.conf", {"exchangedb-postgres": {"CONFIG": safe}})
    done = cli("sync", "-s", src, "-d", dst, "-t", "--json")
    assert done.returncode == 0, done.stderr
    verified = cli("verify", "-s", src, "-d", dst, "--json")
    assert verified.returncode == 0, verified.stderr
    return json.loads(verified.stdout)["findings"]


def test_talers_updates_and_gc_run_under_the_publication(taler_topology, conf, cli):
    primary, ingres, safe = taler_topology
    generator.bulk(primary, 3000, seed=11)
    caught_up(primary)
    assert _sync(conf, cli, ingres, safe) == []
    inserted = _counts(primary)
    assert inserted["reserves_out"] > 0 and inserted["legitimization_measures"] > 0

    with psycopg.connect(primary, autocommit=True) as conn:
        conn.execute("SET search_path TO exchange")
        # Taler's own statements on tables without a primary key
        # (pg_set_extension_manifest.c's upsert; the KYC procedures' is_finished).
        conn.execute("INSERT INTO extensions (name, manifest) VALUES ('taler-ops-marker', '\\x01') "
                     "ON CONFLICT (name) DO UPDATE SET manifest = EXCLUDED.manifest")
        conn.execute("INSERT INTO extensions (name, manifest) VALUES ('taler-ops-marker', '\\x02') "
                     "ON CONFLICT (name) DO UPDATE SET manifest = EXCLUDED.manifest")
        conn.execute("UPDATE legitimization_measures SET is_finished = TRUE")
        # A new reserve credited as Taler's reserves-in code does it: the reserve row,
        # then the stored procedure (inserts reserves_in, updates the reserve).
        pub = bytes(range(100, 132))
        h_payto = conn.execute("SELECT wire_source_h_payto FROM reserves_in "
                               "WHERE wire_source_h_payto IS NOT NULL LIMIT 1").fetchone()[0]
        conn.execute("INSERT INTO reserves (reserve_pub, expiration_date, gc_date) "
                     "VALUES (%s, 0, 0)", (pub,))
        dup = conn.execute(
            "SELECT out_duplicate FROM exchange_do_batch_reserves_update"
            "(%s, %s, 987654321, ROW(1, 0)::taler_amount, 'exchange-account-1', %s, 'X')",
            (pub, FAR_FUTURE, h_payto)).fetchone()[0]
        assert dup is False
        # Every reserve spent, then the deletions of Taler's GC long after: reserves (with
        # their cascades), then reserves_out and recoup, which have no primary key.
        # (Taler's exchange_do_gc itself fails on its reserve statement in v0.14, see
        # test_taler_dbinit; these are its statements with the amount typed.)
        conn.execute("UPDATE reserves SET current_balance = ROW(0, 0)::taler_amount, "
                     "gc_date = LEAST(gc_date, 1)")
        conn.execute("DELETE FROM reserves WHERE gc_date < %s "
                     "AND current_balance = ROW(0, 0)::taler_amount", (FAR_FUTURE,))
        conn.execute("DELETE FROM recoup WHERE reserve_out_serial_id < "
                     "(SELECT COALESCE(min(reserve_out_serial_id), 0) FROM reserves_out)")
        conn.execute("DELETE FROM reserves_out WHERE reserve_uuid < "
                     "(SELECT COALESCE(min(reserve_uuid), 0) FROM reserves)")
    after_gc = _counts(primary)
    assert after_gc["reserves_out"] < inserted["reserves_out"]
    assert after_gc["reserves"] < inserted["reserves"]

    caught_up(primary)
    # The ingres copy lost nothing the exchange collected and got the new credit.
    on_ingres = _counts(ingres)
    assert on_ingres["reserves_out"] == inserted["reserves_out"]
    assert on_ingres["reserves_in"] == inserted["reserves_in"] + 1
    assert on_ingres["reserves"] == inserted["reserves"] + 1
    assert on_ingres["extensions"] == inserted["extensions"] + 1
    # The exchange's updates of mutable and first-seen columns are no finding.
    assert _sync(conf, cli, ingres, safe) == []
    assert same_tables(ingres, safe) is None
    # status reads all three Taler-built databases.
    report = cli("status", "-p", conf("p.conf", {"exchangedb-postgres": {"CONFIG": primary}}),
                 "-s", conf("i.conf", {"exchangedb-postgres": {"CONFIG": ingres}}),
                 "-d", conf("s.conf", {"exchangedb-postgres": {"CONFIG": safe}}), "--json")
    assert report.returncode == 0, report.stdout + report.stderr
    assert json.loads(report.stdout)["healthy"], report.stdout
