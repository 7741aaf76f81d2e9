"""Build and migrate schemas from GNU Taler's own SQL files, as Taler's dbinits do.

A real auditor host has Taler's files installed (``[exchangedb-postgres]
SQL_DIR``, ``[auditordb-postgres] SQL_DIR``).  When the configuration names
them, taler-ops applies exactly those files in taler-exchange-dbinit's and
taler-auditor-dbinit's order (shared/reference/taler-real-schema.md §1.2, §1.5):

exchange: versioning.sql when ``_v`` is missing; every ``exchange-NNNN.sql``
not yet in ``_v.patches``, stopping at the first missing file; procedures.sql
(always); ``exchange_do_create_tables(N)`` with ``search_path = exchange``
(the patches only *queue* table actions; this call runs them).

auditor: versioning.sql when missing; ``auditor-NNNN.sql`` the same way;
``auditor.do_create_tables(NULL)``; procedures.sql (after, unlike the exchange).

Taler runs each file through ``psql -f FILE --set ON_ERROR_STOP=1``.  The
files hold plain SQL (no psql meta-commands; checked before running), so they
are sent here as one simple-protocol query each, which stops at the first
error just as ON_ERROR_STOP does, and every patch file registers itself in
``_v.patches`` inside its own BEGIN/COMMIT.
"""

import os
import re
from collections.abc import Collection, Mapping
from typing import Any, TypedDict

import psycopg
from psycopg.abc import Params

from ..db import one_row
from ..errors import ConfigError, CreateError, DatabaseNotReady

EXCHANGE_PREFIX = "exchange-"
AUDITOR_PREFIX = "auditor-"
MAX_PATCH = 9999
# psql meta-commands start a line with a backslash; a file with one would mean
# something else when not run by psql, so it is refused rather than guessed at.
_META_COMMAND = re.compile(r"^\s*\\", re.MULTILINE)


class NotCopied(TypedDict):
    """What a release added that taler-ops' registry does not copy (see not_copied)."""
    tables: list[str]
    columns: list[str]


def check_sql_dir(sql_dir: str | None, prefix: str, what: str) -> str:
    """The directory must exist and hold at least versioning.sql and the first patch."""
    if not sql_dir:
        raise ConfigError(f"no SQL directory given for the {what}")
    for name in ("versioning.sql", f"{prefix}0001.sql"):
        path = os.path.join(sql_dir, name)
        if not os.access(path, os.R_OK):
            raise ConfigError(
                f"SQL_DIR {sql_dir} for the {what} has no readable {name}: is it the "
                f"directory of Taler's {prefix.rstrip('-')} SQL files?")
    return sql_dir


def patch_files(sql_dir: str, prefix: str) -> list[tuple[str, str]]:
    """[(patch name, path)] in order, up to the first missing file (Taler's rule)."""
    out = []
    for i in range(1, MAX_PATCH + 1):
        name = f"{prefix}{i:04d}"
        path = os.path.join(sql_dir, name + ".sql")
        if not os.access(path, os.R_OK):
            break
        out.append((name, path))
    return out


def has_versioning(conn: psycopg.Connection[Any]) -> bool:
    return bool(one_row(conn.execute("SELECT to_regnamespace('_v') IS NOT NULL"))[0])


def registered(conn: psycopg.Connection[Any], prefix: str) -> list[str]:
    """Registered patch names with ``prefix``, e.g. exchange-0001 (not model-exchange-0001)."""
    if not has_versioning(conn):
        return []
    rows = conn.execute("SELECT patch_name FROM _v.patches WHERE patch_name LIKE %s "
                        "ORDER BY patch_name", (prefix + "%",)).fetchall()
    return [r[0] for r in rows]


def pending(conn: psycopg.Connection[Any], sql_dir: str, prefix: str) -> list[tuple[str, str]]:
    have = set(registered(conn, prefix))
    return [(n, p) for n, p in patch_files(sql_dir, prefix) if n not in have]


def run_file(conn: psycopg.Connection[Any], path: str, what: str) -> None:
    """Execute one of Taler's SQL files; CreateError names the file and the reason."""
    try:
        with open(path, encoding="utf-8") as fh:
            text = fh.read()
    except (OSError, UnicodeDecodeError) as exc:
        raise CreateError(f"cannot read {path}: {exc}") from None
    if _META_COMMAND.search(text):
        raise CreateError(f"{path} contains psql meta-commands; taler-ops runs only plain SQL files")
    try:
        # No parameters: psycopg sends the whole file with the simple query protocol.
        conn.execute(text)
    except psycopg.Error as exc:
        reason = " ".join(str(exc).split())
        _recover(conn)
        raise CreateError(f"loading {path} into the {what} failed: {reason}") from None


def _recover(conn: psycopg.Connection[Any]) -> None:
    """A failed file may leave its own BEGIN open (aborted): end it."""
    try:
        conn.execute("ROLLBACK")
    except psycopg.Error:
        pass


def _call(conn: psycopg.Connection[Any], statement: str, params: Params | None, what: str) -> None:
    try:
        conn.execute(statement, params)
    except psycopg.Error as exc:
        reason = " ".join(str(exc).split())
        _recover(conn)
        raise CreateError(f"{statement.split('(')[0]} on the {what} failed: {reason}") from None


def ensure_versioning(conn: psycopg.Connection[Any], sql_dir: str, what: str) -> None:
    if not has_versioning(conn):
        run_file(conn, os.path.join(sql_dir, "versioning.sql"), what)


def unfinished_table_actions(conn: psycopg.Connection[Any]) -> int | None:
    """Queued table actions not yet run by exchange_do_create_tables (None: not Taler-built,
    or not readable by this role: least-privilege roles such as the sync's may not read
    Taler's queue, and rely on their own check of the tables and columns they use)."""
    readable = one_row(conn.execute(
        "SELECT to_regclass('exchange.exchange_tables') IS NOT NULL AND "
        "has_table_privilege('exchange.exchange_tables', 'SELECT')"))[0]
    if not readable:
        return None
    return int(one_row(conn.execute(
        "SELECT count(*) FROM exchange.exchange_tables WHERE NOT finished"))[0])


def exchange_catalog(conn: psycopg.Connection[Any]) -> dict[str, set[str]]:
    """{table: {column, ...}} of schema exchange's tables (partitions left out)."""
    out: dict[str, set[str]] = {}
    for rel, att in conn.execute(
            """SELECT c.relname, a.attname FROM pg_class c
                 JOIN pg_namespace n ON n.oid = c.relnamespace AND n.nspname = 'exchange'
                 JOIN pg_attribute a ON a.attrelid = c.oid AND a.attnum > 0 AND NOT a.attisdropped
                WHERE c.relkind IN ('r', 'p') AND NOT c.relispartition""").fetchall():
        out.setdefault(rel, set()).add(att)
    return out


def not_copied(before: Mapping[str, set[str]], after: Mapping[str, set[str]],
               replicated: Mapping[str, Collection[str]]) -> NotCopied:
    """What a release added that taler-ops' registry does not copy.

    ``before``/``after``: exchange_catalog() around the migration; ``replicated``:
    {table: names of the columns the registry knows}.  A new table the registry
    does not know is neither published nor copied; a new column of a replicated
    table arrives on the ingres copy (logical replication carries every column both
    sides have) but the sync does not copy it: on the safe copy it keeps its default.
    """
    tables = sorted(t for t in set(after) - set(before) if t not in replicated)
    columns = sorted(f"{t}.{c}" for t, cols in after.items() if t in replicated
                     for c in cols - before.get(t, set()) - set(replicated[t]))
    return {"tables": tables, "columns": columns}


def exchange_build(conn: psycopg.Connection[Any], sql_dir: str, partitions: int | None, what: str) -> list[str]:
    """Apply every pending exchange patch, procedures and the queued table actions.

    ``partitions``: None = plain tables with foreign keys (Taler's default);
    N >= 0 = hash partitions (0: one default partition, Taler's ``-f -P 0``).
    ``conn`` is in autocommit mode.  Returns the names of the patches applied.
    """
    ensure_versioning(conn, sql_dir, what)
    applied = []
    for name, path in pending(conn, sql_dir, EXCHANGE_PREFIX):
        run_file(conn, path, what)
        applied.append(name)
    run_file(conn, os.path.join(sql_dir, "procedures.sql"), what)
    conn.execute("SET search_path TO exchange")
    try:
        _call(conn, "SELECT exchange.exchange_do_create_tables(%s::INTEGER)", (partitions,), what)
    finally:
        conn.execute("RESET search_path")
    return applied


def exchange_drop(conn: psycopg.Connection[Any], sql_dir: str, what: str) -> None:
    """Taler's drop.sql: unregisters exchange-* patches, drops schema exchange, keeps _v."""
    run_file(conn, os.path.join(sql_dir, "drop.sql"), what)


def auditor_build(conn: psycopg.Connection[Any], sql_dir: str, what: str) -> list[str]:
    ensure_versioning(conn, sql_dir, what)
    applied = []
    for name, path in pending(conn, sql_dir, AUDITOR_PREFIX):
        run_file(conn, path, what)
        applied.append(name)
    conn.execute("SET search_path TO auditor")
    try:
        _call(conn, "SELECT auditor.do_create_tables(NULL::INTEGER)", None, what)
    finally:
        conn.execute("RESET search_path")
    run_file(conn, os.path.join(sql_dir, "procedures.sql"), what)
    return applied


def auditor_restart(conn: psycopg.Connection[Any], sql_dir: str, what: str) -> None:
    run_file(conn, os.path.join(sql_dir, "restart.sql"), what)


def auditor_drop(conn: psycopg.Connection[Any], sql_dir: str, what: str) -> None:
    run_file(conn, os.path.join(sql_dir, "drop.sql"), what)


def check_current(conn: psycopg.Connection[Any], prefix: str, sql_dir: str | None, what: str) -> None:
    """For runtime components on a Taler-built database: exit 5 unless it is complete.

    A patch can be registered while its queued tables are not created yet
    (taler-real-schema §1.1, consequence 1), so the queue is checked too; with
    ``sql_dir`` every patch file there must be applied, as Taler's tools check.
    """
    if prefix == EXCHANGE_PREFIX:
        left = unfinished_table_actions(conn)
        if left:
            raise DatabaseNotReady(
                f"the {what} has {left} queued table action(s) that exchange_do_create_tables "
                "has not run: run exchange-dbinit (or taler-exchange-dbinit) first")
    if sql_dir:
        missing = pending(conn, sql_dir, prefix)
        if missing:
            raise DatabaseNotReady(
                f"the {what} is outdated: patch {missing[0][0]} from {sql_dir} is missing; "
                "run dbinit first")
