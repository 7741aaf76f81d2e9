"""taler-ops' own bookkeeping, in a schema of its own (``taler_ops``).

Taler owns schema ``exchange``: its drop.sql drops it, its dbinit and helpers
walk it.  What taler-ops records about a database (its role, the sync's
watermarks and halts) therefore lives beside it, never inside it, so a
database built by Taler's own dbinit gains nothing in ``exchange`` when
taler-ops adopts it.
"""

from psycopg import sql

SCHEMA = "taler_ops"
ROLES = ("primary", "ingres", "safe-copy")

_DDL = f"""
CREATE SCHEMA IF NOT EXISTS {SCHEMA};
COMMENT ON SCHEMA {SCHEMA} IS 'taler-ops bookkeeping (database role, sync progress); not part of Taler''s schema';
CREATE TABLE IF NOT EXISTS {SCHEMA}.database_setup (
    singleton BOOLEAN PRIMARY KEY DEFAULT TRUE CHECK (singleton),
    role TEXT NOT NULL CHECK (role IN ({", ".join("'" + r + "'" for r in ROLES)})),
    partitions INT4 CHECK (partitions >= 0),
    foreign_keys BOOLEAN NOT NULL,
    created_tsz TIMESTAMPTZ NOT NULL DEFAULT now()
);
CREATE TABLE IF NOT EXISTS {SCHEMA}.sync_watermarks (
    table_name TEXT PRIMARY KEY,
    last_serial INT8 NOT NULL DEFAULT 0 CHECK (last_serial >= 0),
    rows_copied INT8 NOT NULL DEFAULT 0,
    complete_serial INT8 NOT NULL DEFAULT 0,
    updated_tsz TIMESTAMPTZ NOT NULL DEFAULT now()
);
CREATE TABLE IF NOT EXISTS {SCHEMA}.sync_halts (
    halt_id INT8 GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    table_name TEXT NOT NULL,
    serial INT8,
    rule TEXT NOT NULL,
    message TEXT NOT NULL,
    halted_tsz TIMESTAMPTZ NOT NULL DEFAULT now(),
    cleared_tsz TIMESTAMPTZ
);
"""


def exists(conn):
    return conn.execute("SELECT to_regclass(%s) IS NOT NULL",
                        (f"{SCHEMA}.database_setup",)).fetchone()[0]


def create(conn, role, partitions, foreign_keys):
    """Create the schema (idempotent) and record the database's role once."""
    conn.execute(_DDL)
    conn.execute(
        sql.SQL("INSERT INTO {}.database_setup (role, partitions, foreign_keys) "
                "VALUES (%s, %s, %s) ON CONFLICT (singleton) DO NOTHING").format(
            sql.Identifier(SCHEMA)),
        (role, partitions, foreign_keys))


def read_setup(conn):
    """(role, partitions, foreign_keys), or None when taler-ops never adopted the database."""
    if not exists(conn):
        return None
    return conn.execute(sql.SQL("SELECT role, partitions, foreign_keys FROM {}.database_setup")
                        .format(sql.Identifier(SCHEMA))).fetchone()


def drop(conn):
    conn.execute(sql.SQL("DROP SCHEMA IF EXISTS {} CASCADE").format(sql.Identifier(SCHEMA)))
