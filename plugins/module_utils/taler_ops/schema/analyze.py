"""On a safe copy: ``taler_ops.analyze_exchange_table(text)``, ANALYZE for the sync.

The sync bulk-copies rows into the safe copy, and an audit planned before
autovacuum's launcher came round to those tables runs without planner
statistics (issue 20: 190-200 s instead of 19 s after 1M rows).  The sync
should ANALYZE right away, but in production it runs as a role that does not
own the tables (roles/safe_copy: a non-login owner role does), and PostgreSQL
15 lets only the owner or a superuser ANALYZE.  This function is the one thing
it may do as the owner: SECURITY DEFINER, with a fixed search_path, for a name
that must be one of the tables taler-ops replicates (baked in from the registry
when dbinit creates it, and a table of schema exchange), passed to ANALYZE only
through ``format('%I')``.  EXECUTE is revoked from PUBLIC; the sync's role gets
it from roles/sync_service.

It runs as the owner of schema taler_ops (in a deployment the owner role, which
owns the exchange tables too: dbinit runs as it).  ``create`` is idempotent
(CREATE OR REPLACE, which also refreshes the list after an upgrade added
tables) and runs inside dbinit's transaction, on a safe copy only.
"""

from typing import Any

import psycopg
from psycopg import sql

from . import bookkeeping, registry
from ..db import one_row

NAME = "analyze_exchange_table"
FUNCTION = f"{bookkeeping.SCHEMA}.{NAME}"
SIGNATURE = f"{FUNCTION}(text)"

_BODY = """
DECLARE
  owner oid;
BEGIN
  IF table_name IS NULL OR NOT table_name = ANY ({tables}) THEN
    RAISE EXCEPTION USING ERRCODE = 'invalid_parameter_value',
      MESSAGE = format('{function}: %s is not a table taler-ops replicates',
                       quote_nullable(table_name));
  END IF;
  SELECT c.relowner INTO owner FROM pg_class c
    JOIN pg_namespace n ON n.oid = c.relnamespace
   WHERE n.nspname = 'exchange' AND c.relname = table_name AND c.relkind IN ('r', 'p');
  IF NOT FOUND THEN
    RAISE EXCEPTION USING ERRCODE = 'undefined_table',
      MESSAGE = format('{function}: there is no table exchange.%I', table_name);
  END IF;
  -- ANALYZE only warns and skips a table its user may not analyze: say it instead.
  IF NOT (pg_has_role(current_user, owner, 'USAGE') OR pg_has_role(current_user,
          (SELECT datdba FROM pg_database WHERE datname = current_database()), 'USAGE')) THEN
    RAISE EXCEPTION USING ERRCODE = 'insufficient_privilege',
      MESSAGE = format('{function} runs as %I, which may not ANALYZE exchange.%I (owned by %I):'
                       ' run exchange-dbinit as the owner of the safe copy',
                       current_user, table_name, owner::regrole);
  END IF;
  EXECUTE format('ANALYZE exchange.%I', table_name);
END
"""


def _definition() -> sql.Composed:
    tables = sql.SQL("ARRAY[{}]::text[]").format(
        sql.SQL(", ").join(sql.Literal(e.name) for e in registry.REPLICATED))
    body = sql.SQL(_BODY).format(tables=tables, function=sql.SQL(FUNCTION))
    return sql.SQL(
        "CREATE OR REPLACE FUNCTION {}(table_name text) RETURNS void LANGUAGE plpgsql "
        "SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $taler_ops$"
        "{}$taler_ops$").format(sql.Identifier(bookkeeping.SCHEMA, NAME), body)


def create(conn: psycopg.Connection[Any], role: str) -> bool:
    """On a safe copy: (re)create the function, owned by the schema's owner; True if it did.

    Inside the caller's transaction, after bookkeeping.create (the schema exists).
    """
    if role != "safe-copy":
        return False
    conn.execute(_definition())
    function = sql.Identifier(bookkeeping.SCHEMA, NAME)
    conn.execute(sql.SQL("REVOKE ALL ON FUNCTION {}(text) FROM PUBLIC").format(function))
    # CREATE makes the role running dbinit its owner (in a deployment the owner role,
    # as it runs dbinit); a superuser's dbinit of an existing copy hands it back.
    row = conn.execute(
        "SELECT s.rolname FROM pg_proc p JOIN pg_namespace n ON n.oid = p.pronamespace"
        " JOIN pg_roles s ON s.oid = n.nspowner"
        " WHERE p.oid = to_regprocedure(%s) AND p.proowner <> n.nspowner",
        (SIGNATURE,)).fetchone()
    if row is not None:
        conn.execute(sql.SQL("ALTER FUNCTION {}(text) OWNER TO {}").format(
            function, sql.Identifier(row[0])))
    return True


def drop(conn: psycopg.Connection[Any]) -> None:
    """With the exchange's bookkeeping (dbinit -r): a reset copy may get another role."""
    if one_row(conn.execute("SELECT to_regprocedure(%s) IS NOT NULL", (SIGNATURE,)))[0]:
        conn.execute(sql.SQL("DROP FUNCTION {}(text)").format(
            sql.Identifier(bookkeeping.SCHEMA, NAME)))
