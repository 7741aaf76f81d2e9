"""What a database is: its flavour (Taler-built or the model), its role, whether its
schema is current.  Every runtime component asks this before touching a copy; dbinit,
gc and the sync all depend on it, and it depends on none of them.
"""

from typing import Any, Literal

import psycopg

from . import auditor_schema, bookkeeping, exchange_schema, taler_sql, versioning
from ..db import one_row
from ..errors import DatabaseNotReady

EXCHANGE_WHAT = "exchange database"
AUDITOR_WHAT = "auditor database"

# How a schema was built: from Taler's SQL files, by taler-ops' built-in model, or
# (exchange only) by a taler-ops whose model registered Taler's own patch names.
Flavour = Literal["taler", "model", "legacy"]
AuditorFlavour = Literal["taler", "model"]


def schema_exists(conn: psycopg.Connection[Any], schema: str) -> bool:
    return bool(one_row(conn.execute("SELECT to_regnamespace(%s) IS NOT NULL", (schema,)))[0])


def exchange_flavour(conn: psycopg.Connection[Any]) -> Flavour | None:
    """'taler' (built from Taler's SQL files), 'model' (taler-ops' built-in model) or None.

    Taler's exchange-0001 creates ``exchange.exchange_tables``, the queue of
    table actions; the model has no such table.
    """
    if one_row(conn.execute("SELECT to_regclass('exchange.exchange_tables') IS NOT NULL"))[0]:
        return "taler"
    if schema_exists(conn, "exchange"):
        if legacy_model(conn):
            return "legacy"
        return "model"
    return None


def legacy_model(conn: psycopg.Connection[Any]) -> bool:
    """Taler's own patch names on a schema Taler did not build: an earlier taler-ops' model."""
    return bool(taler_sql.registered(conn, taler_sql.EXCHANGE_PREFIX))


def refuse_legacy(conn: psycopg.Connection[Any], what: str) -> None:
    """taler-ops before the model had names of its own registered Taler's patch names."""
    if exchange_flavour(conn) == "legacy":
        raise DatabaseNotReady(
            f"the {what} was created by an earlier taler-ops whose model registered Taler's "
            "patch names (exchange-0001) for a schema that differs from Taler's; it cannot be "
            "migrated in place: create the database again (exchange-dbinit -r, or from Taler's "
            "files with SQL_DIR) and let the sync fill the safe copy anew")


def read_setup(conn: psycopg.Connection[Any]) -> bookkeeping.Setup | None:
    """(role, partitions, foreign_keys), or None: see bookkeeping.read_setup."""
    return bookkeeping.read_setup(conn)


def assert_exchange_current(conn: psycopg.Connection[Any], what: str = EXCHANGE_WHAT,
                            sql_dir: str | None = None) -> None:
    """For every runtime component: exit 5 unless the exchange schema is exactly current.

    A Taler-built database is current when its queued table actions have all
    run and, with ``sql_dir``, every patch file there is applied.
    """
    flavour = exchange_flavour(conn)
    if flavour == "taler":
        taler_sql.check_current(conn, taler_sql.EXCHANGE_PREFIX, sql_dir, what)
        return
    if flavour == "legacy":
        refuse_legacy(conn, what)
    versioning.check_current(conn, exchange_schema.PATCHES, what)


def auditor_flavour(conn: psycopg.Connection[Any]) -> AuditorFlavour | None:
    if one_row(conn.execute("SELECT to_regclass('auditor.auditor_tables') IS NOT NULL"))[0]:
        return "taler"
    if schema_exists(conn, "auditor"):
        return "model"
    return None


def assert_auditor_current(conn: psycopg.Connection[Any], what: str = AUDITOR_WHAT) -> None:
    """For the audit: exit 5 unless the auditor schema (either flavour) is complete,
    and taler-ops' audit state beside it (schema taler_ops) exists."""
    if auditor_flavour(conn) == "taler":
        taler_sql.check_current(conn, taler_sql.AUDITOR_PREFIX, None, what)
        if not taler_sql.registered(conn, taler_sql.AUDITOR_PREFIX):
            raise DatabaseNotReady(f"the {what} has no auditor-NNNN patch registered; "
                                   "run auditor-dbinit first")
    else:
        versioning.check_current(conn, auditor_schema.PATCHES, what)
    missing = [t for t in auditor_schema.TALER_OPS_TABLES
               if not one_row(conn.execute("SELECT to_regclass(%s) IS NOT NULL", (t,)))[0]]
    if missing:
        raise DatabaseNotReady(
            f"the {what} lacks taler-ops' audit state table {missing[0]}: run auditor-dbinit "
            "(it adds it beside Taler's schema)")
