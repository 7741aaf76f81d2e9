"""The sync keeps the safe copy's planner statistics current (issue 20 item 3), as a role
that does not own the tables: through taler_ops.analyze_exchange_table, which dbinit
creates on a safe copy.  Real PostgreSQL, real non-superuser roles."""

import logging
import os

import psycopg
import pytest
from psycopg.conninfo import conninfo_to_dict

from taler_ops import sync
from taler_ops.schema import analyze, dbinit, registry
from taler_ops.sync import statistics

import sync_data
from conftest import FLAVOURS, flavour_param
from sync_helpers import all_digests, clone, execute, make_template, new_name

BASE_ROWS = 20
BIG = "reserves"            # no parents: rows of it alone are a valid history
SMALL = "wire_out"
MANY = statistics.MIN_ROWS + 500


@pytest.fixture(scope="module", params=[flavour_param(f) for f in FLAVOURS] + ["model-P2"])
def templates(cluster, request):
    """Ingres (BASE_ROWS rows per table) and a safe copy synced to it, per flavour."""
    flavour, _, parts = request.param.partition("-P")
    partitions = int(parts) if parts else None
    tag = request.param.replace("-", "_").lower()
    src = make_template(cluster, f"stat_tpl_src_{tag}", "ingres", rows=BASE_ROWS,
                        flavour=flavour, partitions=partitions)
    dst = make_template(cluster, f"stat_tpl_dst_{tag}", "safe-copy", flavour=flavour,
                        partitions=partitions)
    sync.sync_once(src, dst)
    return {"src": conninfo_to_dict(src)["dbname"], "dst": conninfo_to_dict(dst)["dbname"],
            "flavour": request.param}


@pytest.fixture
def pair(cluster, templates):
    return clone(cluster, templates["src"], "stat_src"), clone(cluster, templates["dst"], "stat_dst")


# A table and, if it is partitioned, its partitions (pg_partition_tree lists nothing for a
# plain table).
TREE = ("SELECT %(t)s::regclass AS relid UNION ALL "
        "SELECT relid FROM pg_partition_tree(%(t)s::regclass) WHERE parentrelid IS NOT NULL")


def last_analyze(uri, table):
    """The newest manual ANALYZE of ``table`` or of any partition under it (None: never)."""
    with psycopg.connect(uri) as conn:
        return conn.execute(
            f"SELECT max(s.last_analyze) FROM ({TREE}) p "
            "JOIN pg_stat_user_tables s ON s.relid = p.relid",
            {"t": f"exchange.{table}"}).fetchone()[0]


def analyzed_tables(uri):
    return {e.name for e in registry.REPLICATED if last_analyze(uri, e.name) is not None}


def no_autovacuum(uri, table):
    """Keep autovacuum's own ANALYZE out of a test that counts changes across syncs."""
    with psycopg.connect(uri, autocommit=True) as conn:
        for (leaf,) in conn.execute(
                f"SELECT p.relid::regclass::text FROM ({TREE}) p JOIN pg_class c ON c.oid = p.relid"
                " WHERE c.relkind = 'r'", {"t": f"exchange.{table}"}).fetchall():
            conn.execute(f"ALTER TABLE {leaf} SET (autovacuum_enabled = off)")


def add_rows(src, big=MANY, small=30, start=BASE_ROWS + 1):
    sync_data.populate(src, big, start=start, tables=[BIG])
    sync_data.populate(src, small, start=start, tables=[SMALL])


def test_a_pass_that_copied_many_rows_analyzes_those_tables_only(pair):
    src, dst = pair
    # The template's sync copied BASE_ROWS rows per table: far below the threshold.
    assert analyzed_tables(dst) == set()
    add_rows(src)
    result = sync.sync_once(src, dst)
    assert result["tables"][BIG]["copied"] == MANY and result["tables"][SMALL]["copied"] == 30
    assert result["analyzed"] == [BIG], result["warnings"]
    assert analyzed_tables(dst) == {BIG}
    first = last_analyze(dst, BIG)
    with psycopg.connect(dst) as conn:
        # The statistics now know the rows (a partitioned table: its partitions do).
        assert conn.execute(
            f"SELECT sum(c.reltuples) FROM ({TREE}) p "
            "JOIN pg_class c ON c.oid = p.relid WHERE c.relkind = 'r'",
            {"t": f"exchange.{BIG}"}).fetchone()[0] == MANY + BASE_ROWS

    # A few rows more, into both: no table crosses the threshold again.
    add_rows(src, big=50, small=50, start=BASE_ROWS + 1 + MANY)
    again = sync.sync_once(src, dst)
    assert again["copied"] == 100 and again["analyzed"] == []
    assert last_analyze(dst, BIG) == first and analyzed_tables(dst) == {BIG}
    assert all_digests(dst) == all_digests(src)


def test_a_dry_run_analyzes_nothing(pair):
    src, dst = pair
    add_rows(src)
    result = sync.sync_once(src, dst, dry_run=True)
    assert result["tables"][BIG]["copied"] == MANY and result["analyzed"] == []
    assert analyzed_tables(dst) == set()


def test_the_function_refuses_anything_but_a_replicated_table(pair):
    _, dst = pair
    with psycopg.connect(dst, autocommit=True) as conn:
        not_replicated = [t for t in registry.ALL_TABLES if t not in registry.BY_NAME]
        # Taler's schema has tables of its own; the model's are in ALL_TABLES.
        if conn.execute("SELECT to_regclass('exchange.exchange_tables') IS NOT NULL").fetchone()[0]:
            not_replicated.append("exchange_tables")
        for name in not_replicated + [
                "pg_authid", "exchange.reserves", '"reserves"', "Reserves", "reserves ",
                "reserves; DROP TABLE exchange.reserves", "reserves\"; DROP TABLE x; --", "", None]:
            with pytest.raises(psycopg.errors.InvalidParameterValue,
                               match="is not a table taler-ops replicates"):
                conn.execute(f"SELECT {analyze.FUNCTION}(%s)", (name,))
        assert conn.execute("SELECT to_regclass('exchange.reserves') IS NOT NULL").fetchone()[0]
        # It is SECURITY DEFINER with its own search_path, and nobody may call it by default.
        secdef, config, public = conn.execute(
            "SELECT prosecdef, proconfig, has_function_privilege('public', oid, 'EXECUTE') "
            "FROM pg_proc WHERE oid = to_regprocedure(%s)", (analyze.SIGNATURE,)).fetchone()
        assert secdef and config == ["search_path=pg_catalog, pg_temp"] and not public
    assert analyzed_tables(dst) == set()


def test_an_old_safe_copy_without_the_function_warns_once_copies_and_dbinit_adds_it(
        pair, caplog):
    src, dst = pair
    execute(dst, f"DROP FUNCTION {analyze.SIGNATURE}")     # as before this release
    no_autovacuum(dst, BIG)
    add_rows(src)
    with caplog.at_level(logging.WARNING, logger="taler_ops.sync"):
        result = sync.sync_once(src, dst)
    assert result["tables"][BIG]["copied"] == MANY and result["analyzed"] == []
    assert all_digests(dst) == all_digests(src)
    told = [r.getMessage() for r in caplog.records if analyze.SIGNATURE in r.getMessage()]
    assert len(told) == 1 and "run exchange-dbinit" in told[0], caplog.text
    assert told == [w for w in result["warnings"] if analyze.SIGNATURE in w]
    assert analyzed_tables(dst) == set()

    # The upgrade: dbinit on the existing safe copy creates it; the next pass analyzes
    # (the statistics still count the rows copied without it).
    dbinit.exchange_dbinit(dst)
    sync_data.populate(src, 1, start=BASE_ROWS + 1 + MANY, tables=[BIG])
    assert sync.sync_once(src, dst)["analyzed"] == [BIG]
    assert analyzed_tables(dst) == {BIG}


# -- least privilege: the safe copy owned by a non-login role, the sync another role --------

def _roles(cluster, tag):
    owner, writer, other = (f"stat_{k}_{tag}" for k in ("owner", "writer", "other"))
    execute(cluster.uri(), f'CREATE ROLE "{owner}" NOLOGIN', f'CREATE ROLE "{writer}" LOGIN',
            f'CREATE ROLE "{other}" LOGIN')
    return owner, writer, other


def _grant_sync(dst, writer):
    """What roles/sync_service grants on the safe copy, without the function."""
    grants = [f'GRANT USAGE ON SCHEMA exchange, _v, taler_ops TO "{writer}"',
              f'GRANT SELECT ON _v.patches, taler_ops.database_setup TO "{writer}"',
              f'GRANT SELECT, INSERT, UPDATE ON taler_ops.sync_watermarks, taler_ops.sync_halts '
              f'TO "{writer}"',
              f'GRANT SELECT, INSERT, UPDATE, DELETE ON taler_ops.sync_holes, taler_ops.sync_cuts '
              f'TO "{writer}"']
    grants += [f'GRANT SELECT, INSERT ON exchange."{e.name}" TO "{writer}"'
               for e in registry.REPLICATED]
    execute(dst, *grants)


def test_a_non_owner_sync_role_analyzes_through_the_owners_function(cluster, caplog):
    """As roles/safe_copy deploys it: dbinit runs as a non-login owner role (PGOPTIONS
    role=), the sync as a login role that is neither owner nor superuser."""
    tag = str(os.getpid())
    owner, writer, other = _roles(cluster, tag)
    src = make_template(cluster, new_name("stat_owned_src"), "ingres", rows=BASE_ROWS)
    name = new_name("stat_owned_dst")
    dst = cluster.createdb(name)
    execute(dst, f'GRANT CONNECT, CREATE ON DATABASE "{name}" TO "{owner}"')
    as_owner = dst + f"&options=-c%20role%3D{owner}"
    dbinit.exchange_dbinit(as_owner, role="safe-copy")
    with psycopg.connect(dst) as conn:
        assert conn.execute(
            "SELECT proowner::regrole::text FROM pg_proc WHERE oid = to_regprocedure(%s)",
            (analyze.SIGNATURE,)).fetchone()[0] == owner
    # An administrator's later dbinit (superuser) leaves it running as the owner, also
    # where it creates it (a safe copy of an earlier release).
    dbinit.exchange_dbinit(dst)
    execute(dst, f"DROP FUNCTION {analyze.SIGNATURE}")
    dbinit.exchange_dbinit(dst)
    with psycopg.connect(dst) as conn:
        assert conn.execute(
            "SELECT proowner::regrole::text, (SELECT rolsuper FROM pg_roles WHERE rolname = %s)"
            " FROM pg_proc WHERE oid = to_regprocedure(%s)",
            (writer, analyze.SIGNATURE)).fetchone() == (owner, False)
    _grant_sync(dst, writer)
    no_autovacuum(dst, BIG)
    dst_writer = cluster.uri(name, user=writer)
    sync_data.populate(src, MANY, start=BASE_ROWS + 1, tables=[BIG])

    # Without EXECUTE: one warning naming the grant; the rows are copied all the same.
    with caplog.at_level(logging.WARNING, logger="taler_ops.sync"):
        result = sync.sync_once(src, dst_writer, trigger_free=False)
    assert result["tables"][BIG]["copied"] == MANY + BASE_ROWS and result["analyzed"] == []
    told = [r.getMessage() for r in caplog.records if "may not execute" in r.getMessage()]
    assert len(told) == 1 and writer in told[0] and "GRANT EXECUTE" in told[0], caplog.text
    assert all_digests(dst) == all_digests(src)

    with psycopg.connect(dst_writer, autocommit=True) as conn:
        # The sync's role may not ANALYZE by itself: PostgreSQL skips the table.
        conn.execute(f"ANALYZE exchange.{BIG}")
    assert last_analyze(dst, BIG) is None

    execute(dst, f'GRANT EXECUTE ON FUNCTION {analyze.SIGNATURE} TO "{writer}"')
    sync_data.populate(src, 1, start=BASE_ROWS + 1 + MANY, tables=[BIG])
    assert sync.sync_once(src, dst_writer, trigger_free=False)["analyzed"] == [BIG]
    assert analyzed_tables(dst) == {BIG}

    with psycopg.connect(cluster.uri(name, user=other), autocommit=True) as conn:
        with pytest.raises(psycopg.errors.InsufficientPrivilege):
            conn.execute(f"SELECT {analyze.FUNCTION}(%s)", (SMALL,))
    with psycopg.connect(dst_writer, autocommit=True) as conn:
        conn.execute(f"SELECT {analyze.FUNCTION}(%s)", (SMALL,))
        with pytest.raises(psycopg.errors.InvalidParameterValue):
            conn.execute(f"SELECT {analyze.FUNCTION}(%s)", ("reserves; DROP ROLE x",))
    assert analyzed_tables(dst) == {BIG, SMALL}


def test_a_primary_and_an_ingres_copy_get_no_function(cluster):
    for role in ("primary", "ingres"):
        uri = make_template(cluster, new_name(f"stat_{role}"), role)
        with psycopg.connect(uri) as conn:
            assert conn.execute("SELECT to_regprocedure(%s)", (analyze.SIGNATURE,)).fetchone()[0] \
                is None


def test_a_reset_drops_the_function_with_the_bookkeeping(cluster):
    uri = make_template(cluster, new_name("stat_reset"), "safe-copy")
    dbinit.exchange_drop(uri)
    with psycopg.connect(uri) as conn:
        assert conn.execute("SELECT to_regprocedure(%s)", (analyze.SIGNATURE,)).fetchone()[0] \
            is None
