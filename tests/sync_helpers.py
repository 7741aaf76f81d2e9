"""Helpers shared by the sync and verify tests: template databases and digests."""

import itertools

import psycopg

from taler_ops.schema import dbinit, registry

import sync_data
from taler_build import build_taler_exchange, require_taler_sql

# The templates of tests/test_sync.py and tests/test_sync_halts.py (tests/conftest.py).
BASE_ROWS = 20          # rows per table in the templates
NEW = (21, 30)          # rows appended before each tamper test: serials 21..50
BAD = 46                # the tampered serial
BATCH = 10              # so 21..30 and 31..40 commit before the bad batch 41..50

_names = itertools.count(1)


def new_name(prefix):
    return f"{prefix}_{next(_names)}"


def clone(cluster, template, prefix):
    name = new_name(prefix)
    with psycopg.connect(cluster.uri(), autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{name}" TEMPLATE "{template}"')
    return cluster.uri(name)


def make_template(cluster, name, role, rows=0, partitions=None, flavour="model"):
    """A database used only as a template: dbinit'ed, with ``rows`` rows per table.

    ``flavour`` "taler": built from Taler's own SQL files (as taler-exchange-dbinit
    does), then adopted by taler-ops with ``role``, which adds only its bookkeeping.
    """
    uri = cluster.createdb(name)
    if flavour == "taler":
        build_taler_exchange(uri, partitions=partitions, sql_root=require_taler_sql())
        dbinit.exchange_dbinit(uri, role=role)
    else:
        dbinit.exchange_dbinit(uri, role=role, partitions=partitions)
    if rows:
        sync_data.populate(uri, rows)
    return uri


def table_digest(uri_or_conn, table, upto=None):
    entry = registry.entry(table)
    cols = ", ".join(f'"{c.name}"' for c in entry.copy_columns)
    where = f'WHERE "{entry.serial}" <= {int(upto)}' if upto is not None else ""
    query = (f'SELECT count(*), md5(string_agg(md5(ROW({cols})::text), \'\' '
             f'ORDER BY "{entry.serial}")) FROM exchange."{table}" {where}')
    if isinstance(uri_or_conn, str):
        with psycopg.connect(uri_or_conn) as conn:
            return tuple(conn.execute(query).fetchone())
    return tuple(uri_or_conn.execute(query).fetchone())


def all_digests(uri):
    with psycopg.connect(uri) as conn:
        return {e.name: table_digest(conn, e.name) for e in registry.REPLICATED}


def watermarks(uri):
    with psycopg.connect(uri) as conn:
        return dict(conn.execute(
            "SELECT table_name, last_serial FROM taler_ops.sync_watermarks").fetchall())


def execute(uri, *statements, params=None):
    """Run statements; on an ingres copy as its owner would (or a replication apply worker).

    There, session_replication_role = replica: Taler's triggers and foreign keys (a
    copy built from Taler's SQL has both) do not stand in an attacker's way.  Elsewhere
    Taler's triggers run, with the search path Taler's code gives them.
    """
    with psycopg.connect(uri, autocommit=True) as conn:
        # Taler's own triggers name their tables without a schema, as Taler's code runs.
        conn.execute("SET search_path TO exchange, public")
        if _is_ingres(conn):
            conn.execute("SET session_replication_role = replica")
        out = None
        for stmt in statements:
            cur = conn.execute(stmt, params)
            out = cur.fetchall() if cur.description else None
        return out


def _is_ingres(conn):
    setup = conn.execute("SELECT to_regclass('taler_ops.database_setup') IS NOT NULL").fetchone()[0]
    return bool(setup) and conn.execute(
        "SELECT role = 'ingres' FROM taler_ops.database_setup").fetchone()[0]


def drop_checks(uri, table):
    """What an attacker on ingres can do: remove the CHECK constraints of a table."""
    with psycopg.connect(uri, autocommit=True) as conn:
        names = [r[0] for r in conn.execute(
            "SELECT conname FROM pg_constraint WHERE conrelid = %s::regclass AND contype = 'c'",
            (f"exchange.{table}",)).fetchall()]
        for name in names:
            conn.execute(f'ALTER TABLE exchange."{table}" DROP CONSTRAINT "{name}"')


def drop_keys(uri, table):
    with psycopg.connect(uri, autocommit=True) as conn:
        names = [r[0] for r in conn.execute(
            "SELECT conname FROM pg_constraint WHERE conrelid = %s::regclass "
            "AND contype IN ('p', 'u')", (f"exchange.{table}",)).fetchall()]
        for name in names:
            conn.execute(f'ALTER TABLE exchange."{table}" DROP CONSTRAINT "{name}" CASCADE')


def conf_pair(conf, src, dst):
    return (conf("src.conf", {"exchangedb-postgres": {"CONFIG": src}}),
            conf("dst.conf", {"exchangedb-postgres": {"CONFIG": dst}}))
