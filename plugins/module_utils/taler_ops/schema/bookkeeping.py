"""taler-ops' own bookkeeping, in schema ``taler_ops`` (never in Taler's ``exchange``).

Taler's drop.sql drops schema ``exchange``; what taler-ops records about a
database (its role and layout) and the sync's state (watermarks, halts, holes)
must neither be dropped with it nor get in its way.  ``create`` is idempotent
and runs inside the caller's transaction, so dbinit can create the schema in
the same transaction as the first exchange patch, and a database built from
Taler's own SQL files can get it afterwards.  Databases made by an older
taler-ops keep their rows: the tables are moved out of ``exchange``.
"""

from typing import Any, Literal, NamedTuple

import psycopg
from psycopg import sql

from ..db import one_row

SCHEMA = "taler_ops"
SETUP = f"{SCHEMA}.database_setup"
WATERMARKS = f"{SCHEMA}.sync_watermarks"
HALTS = f"{SCHEMA}.sync_halts"
HOLES = f"{SCHEMA}.sync_holes"
CUTS = f"{SCHEMA}.sync_cuts"
TABLES = ("database_setup", "sync_watermarks", "sync_halts", "sync_holes", "sync_cuts")
# What a database is (recorded at creation; GC and the sync read it).
Role = Literal["primary", "ingres", "safe-copy"]
ROLES: tuple[Role, ...] = ("primary", "ingres", "safe-copy")


class Setup(NamedTuple):
    """The database_setup row: what the database is and how it was laid out."""
    role: Role
    partitions: int | None      # dbinit -P; None: plain tables
    foreign_keys: bool


_DDL = [
    f"CREATE SCHEMA IF NOT EXISTS {SCHEMA}",
    f"COMMENT ON SCHEMA {SCHEMA} IS 'taler-ops bookkeeping: database role, sync state'",
    # What this database is: GC and the sync read it, never guess it.
    f"""CREATE TABLE IF NOT EXISTS {SETUP} (
    singleton BOOLEAN PRIMARY KEY DEFAULT TRUE CHECK (singleton),
    role TEXT NOT NULL CHECK (role IN ({", ".join("'" + r + "'" for r in ROLES)})),
    partitions INT4 CHECK (partitions >= 0),
    foreign_keys BOOLEAN NOT NULL,
    created_tsz TIMESTAMPTZ NOT NULL DEFAULT now()
)""",
    # The sync's per-table progress on a safe copy, committed with the rows.
    f"""CREATE TABLE IF NOT EXISTS {WATERMARKS} (
    table_name TEXT PRIMARY KEY,
    last_serial INT8 NOT NULL DEFAULT 0 CHECK (last_serial >= 0),
    rows_copied INT8 NOT NULL DEFAULT 0,
    -- the audit reads up to here: the last complete pass's cut, below every open hole
    complete_serial INT8 NOT NULL DEFAULT 0,
    updated_tsz TIMESTAMPTZ NOT NULL DEFAULT now()
)""",
    # Why the sync stopped (one row per distinct halt); cleared once it copied past it.
    f"""CREATE TABLE IF NOT EXISTS {HALTS} (
    halt_id INT8 GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    table_name TEXT NOT NULL,
    serial INT8,
    rule TEXT NOT NULL,
    message TEXT NOT NULL,
    halted_tsz TIMESTAMPTZ NOT NULL DEFAULT now(),
    cleared_tsz TIMESTAMPTZ
)""",
    # Serials lo < s < hi that a pass found missing below the watermark: an
    # exchange transaction may still commit them.  Open holes are searched
    # again on every pass; an expired one only for a late row (a halt).
    f"""CREATE TABLE IF NOT EXISTS {HOLES} (
    table_name TEXT NOT NULL,
    lo INT8 NOT NULL,
    hi INT8 NOT NULL,
    seen_tsz TIMESTAMPTZ NOT NULL DEFAULT now(),
    source_clock TIMESTAMPTZ,
    source_xmax INT8,
    -- the pass that first saw the serials missing (pieces of a split hole keep it)
    pass_id INT8 NOT NULL DEFAULT 0,
    expired_tsz TIMESTAMPTZ,
    PRIMARY KEY (table_name, lo),
    CHECK (hi > lo + 1)
)""",
    # The watermarks at the end of recent complete passes.  A pass's cut becomes
    # the audit's complete_serial once every hole open at its end has expired
    # unfilled: then the rows up to it are exactly that pass's snapshot, so no
    # exchange transaction is split.  ``spoiled``: a hole open then was filled later.
    f"""CREATE TABLE IF NOT EXISTS {CUTS} (
    pass_id INT8 PRIMARY KEY,
    cut JSONB NOT NULL,
    spoiled BOOLEAN NOT NULL DEFAULT FALSE,
    made_tsz TIMESTAMPTZ NOT NULL DEFAULT now()
)""",
]


def _move_legacy(conn: psycopg.Connection[Any]) -> None:
    """Tables an older taler-ops created in schema exchange move here, rows and all."""
    for name in TABLES:
        old = one_row(conn.execute(
            "SELECT to_regclass(%s) IS NOT NULL, to_regclass(%s) IS NOT NULL",
            (f"exchange.{name}", f"{SCHEMA}.{name}")))
        if old[0] and not old[1]:
            conn.execute(sql.SQL("ALTER TABLE {} SET SCHEMA {}").format(
                sql.Identifier("exchange", name), sql.Identifier(SCHEMA)))


def create(conn: psycopg.Connection[Any], role: Role, partitions: int | None,
           foreign_keys: bool) -> None:
    """Idempotent: schema, tables and the one database_setup row (kept if present)."""
    conn.execute(f"CREATE SCHEMA IF NOT EXISTS {SCHEMA}")
    _move_legacy(conn)
    for stmt in _DDL:
        conn.execute(stmt)
    conn.execute(
        f"INSERT INTO {SETUP} (role, partitions, foreign_keys) VALUES (%s, %s, %s) "
        "ON CONFLICT (singleton) DO NOTHING", (role, partitions, foreign_keys))


def exists(conn: psycopg.Connection[Any]) -> bool:
    return bool(one_row(conn.execute("SELECT to_regclass(%s) IS NOT NULL", (SETUP,)))[0])


def read_setup(conn: psycopg.Connection[Any]) -> Setup | None:
    """(role, partitions, foreign_keys) of an exchange database, or None before create()."""
    if not exists(conn):
        legacy = conn.execute("SELECT to_regclass('exchange.database_setup') IS NOT NULL")
        if not one_row(legacy)[0]:
            return None
        # Not migrated yet (dbinit moves it): still readable, e.g. on a hot standby.
        row = conn.execute(
            "SELECT role, partitions, foreign_keys FROM exchange.database_setup").fetchone()
    else:
        row = conn.execute(f"SELECT role, partitions, foreign_keys FROM {SETUP}").fetchone()
    return None if row is None else Setup(*row)


def drop(conn: psycopg.Connection[Any]) -> None:
    """The exchange's bookkeeping; the schema too once nothing else is left in it.

    An auditor database may share the database (and schema taler_ops, for the
    audit's own state): an exchange reset must not take that with it.
    """
    for name in TABLES:
        conn.execute(sql.SQL("DROP TABLE IF EXISTS {} CASCADE").format(
            sql.Identifier(SCHEMA, name)))
    left = one_row(conn.execute(
        "SELECT count(*) FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace "
        "WHERE n.nspname = %s", (SCHEMA,)))[0]
    if not left:
        conn.execute(f"DROP SCHEMA IF EXISTS {SCHEMA} CASCADE")
