"""taler-ops' bookkeeping lives in schema taler_ops, out of Taler's exchange schema."""

import psycopg

from taler_ops.schema import bookkeeping, dbinit, exchange_schema, versioning

from sync_helpers import execute


def test_dbinit_puts_role_and_sync_state_in_taler_ops(cluster):
    uri = cluster.createdb("bk_fresh")
    dbinit.exchange_dbinit(uri, role="safe-copy")
    tables = execute(uri, "SELECT table_schema, table_name FROM information_schema.tables "
                          "WHERE table_name IN ('database_setup', 'sync_watermarks', "
                          "'sync_halts', 'sync_holes', 'sync_cuts') ORDER BY 2")
    assert tables == [("taler_ops", name) for name in sorted(bookkeeping.TABLES)]
    with psycopg.connect(uri) as conn:
        assert bookkeeping.read_setup(conn) == ("safe-copy", None, True)


def test_talers_drop_of_the_exchange_schema_leaves_it_and_dbinit_r_drops_it(cluster):
    uri = cluster.createdb("bk_drop")
    dbinit.exchange_dbinit(uri, role="ingres")
    execute(uri, "INSERT INTO taler_ops.sync_halts (table_name, rule, message) "
                 "VALUES ('reserves', 'null', 'kept')")
    execute(uri, "DROP SCHEMA exchange CASCADE")        # what Taler's drop.sql does
    assert execute(uri, "SELECT message FROM taler_ops.sync_halts") == [("kept",)]
    dbinit.exchange_dbinit(uri, reset=True, role="ingres")
    assert execute(uri, "SELECT count(*) FROM taler_ops.sync_halts") == [(0,)]
    with psycopg.connect(uri) as conn:
        assert bookkeeping.read_setup(conn) == ("ingres", None, False)


def test_create_after_talers_own_sql_and_idempotent(cluster):
    """A database whose exchange schema taler-ops did not create gets the bookkeeping later."""
    uri = cluster.createdb("bk_foreign")
    with psycopg.connect(uri, autocommit=True) as conn:
        versioning.ensure_versioning(conn)
        for patch in exchange_schema.PATCHES:     # stand-in for Taler's own SQL files
            versioning.apply_patch(conn, patch, exchange_schema.render(patch.name))
        assert bookkeeping.read_setup(conn) is None
        for _ in range(2):
            with conn.transaction():
                bookkeeping.create(conn, "primary", None, True)
        assert bookkeeping.read_setup(conn) == ("primary", None, True)
        assert conn.execute("SELECT count(*) FROM taler_ops.database_setup").fetchone() == (1,)


def test_an_older_layout_is_moved_with_its_rows(cluster):
    uri = cluster.createdb("bk_legacy")
    dbinit.exchange_dbinit(uri, role="safe-copy")
    execute(uri, "INSERT INTO taler_ops.sync_watermarks (table_name, last_serial) "
                 "VALUES ('reserves', 42)")
    # What an older taler-ops left: the same tables inside schema exchange.
    for name in bookkeeping.TABLES:
        execute(uri, f"ALTER TABLE taler_ops.{name} SET SCHEMA exchange")
    # ... and no function for the sync's ANALYZE yet (schema/analyze.py).
    execute(uri, "DROP FUNCTION taler_ops.analyze_exchange_table(text)")
    execute(uri, "DROP SCHEMA taler_ops")
    with psycopg.connect(uri) as conn:
        assert bookkeeping.read_setup(conn) == ("safe-copy", None, True)
    dbinit.exchange_dbinit(uri)
    assert execute(uri, "SELECT last_serial FROM taler_ops.sync_watermarks "
                        "WHERE table_name = 'reserves'") == [(42,)]
    assert execute(uri, "SELECT to_regclass('exchange.sync_watermarks')") == [(None,)]
    assert execute(uri, "SELECT to_regprocedure('taler_ops.analyze_exchange_table(text)') "
                        "IS NOT NULL") == [(True,)]
