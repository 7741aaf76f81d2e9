"""exchange-dbinit and auditor-dbinit: create, upgrade, reset, GC.

Each missing patch is applied in its own transaction together with its
registration in ``_v.patches``; a whole run holds an advisory lock so racing
runs apply every patch once and both succeed.  ``check`` only reads.
"""

from collections.abc import Callable, Sequence
from typing import Any, Literal, NotRequired, TypedDict

import psycopg
from psycopg import sql

from . import analyze, auditor_schema, bookkeeping, exchange_schema, gc, registry, taler_sql, versioning
from ..db import connect, one_row
from ..errors import CreateError, DatabaseNotReady, TalerOpsError, UsageError
from .bookkeeping import Role, Setup
from .exchange_schema import Patch
from .state import (AUDITOR_WHAT, EXCHANGE_WHAT, AuditorFlavour, Flavour, auditor_flavour, exchange_flavour,
                    legacy_model, read_setup, refuse_legacy, schema_exists)


class SetupDict(TypedDict):
    role: Role
    partitions: int | None
    foreign_keys: bool


class ExchangeResult(TypedDict):
    """What exchange-dbinit did (or, with check, would do)."""
    patches_before: list[str]
    pending: list[str]
    applied: list[str]
    reset: bool
    gc: gc.GcResult | None
    # Set before every return, once known.
    patches_after: NotRequired[list[str]]
    setup: NotRequired[SetupDict | None]
    # A database built from Taler's SQL files only.
    flavour: NotRequired[Literal["taler"]]
    unfinished_table_actions: NotRequired[int]
    warnings: NotRequired[list[str]]
    not_copied: NotRequired[taler_sql.NotCopied]


class ExchangeDropResult(TypedDict):
    patches_before: list[str]
    patches_after: list[str]
    applied: list[str]
    pending: list[str]
    dropped: bool
    setup: None


class AuditorResult(TypedDict):
    """What auditor-dbinit did (or, with check, would do)."""
    patches_before: list[str]
    pending: list[str]
    applied: list[str]
    restarted: bool
    dropped: bool
    patches_after: NotRequired[list[str]]      # set before every return
    flavour: NotRequired[Literal["taler"]]     # built from Taler's SQL files


def _pending(conn: psycopg.Connection[Any], patches: Sequence[Patch], prefix: str) -> list[Patch]:
    have = set(versioning.applied(conn, prefix))
    return [p for p in patches if p.name not in have]


def _apply(conn: psycopg.Connection[Any], patches: Sequence[Patch],
           render: Callable[[str], Sequence[versioning.Statement]], what: str) -> list[str]:
    applied = []
    for patch in patches:
        try:
            if versioning.apply_patch(conn, patch, render(patch.name)):
                applied.append(patch.name)
        except psycopg.Error as exc:
            reason = " ".join(str(exc).split())
            raise CreateError(f"applying patch {patch.name} to the {what} failed: {reason}") from None
    return applied


def serial_indexes(conn: psycopg.Connection[Any], role: Role) -> list[str]:
    """On the model's ingres and safe copies, an index led by each replicated table's serial.

    The sync reads the ingres copy and checks the safe copy by serial range, batch
    after batch; a table whose serial no index leads (the model's reserves_open_deposits
    and policy_fulfillments) would be read whole for every batch, a cost that grows
    with the table.  Idempotent; the primary is left as it is, and so is a database
    Taler built (adopted with bookkeeping only: docs/sync.md "Scale" says what its
    policy_fulfillments lacks).  Returns the indexes created.
    """
    if role not in ("ingres", "safe-copy"):
        return []
    created = []
    for entry in registry.REPLICATED:
        # A table of a later patch than the database has (stopped at an earlier
        # patch level, e.g. before model-exchange-0002) has no serial to index yet.
        if one_row(conn.execute(
                "SELECT to_regclass(%s) IS NULL OR EXISTS (SELECT 1 FROM pg_index i"
                " JOIN pg_attribute a ON a.attrelid = i.indrelid AND a.attnum = i.indkey[0]"
                " WHERE i.indrelid = to_regclass(%s) AND a.attname = %s)",
                (entry.qualified, entry.qualified, entry.serial)))[0]:
            continue
        name = f"taler_ops_{entry.name}_by_serial"
        conn.execute(f'CREATE INDEX IF NOT EXISTS "{name}" ON {entry.qualified} ("{entry.serial}")')
        created.append(name)
    return created


def exchange_dbinit(uri: str, check: bool = False, reset: bool = False, run_gc: bool = False,
                    partitions: int | None = None, role: Role | None = None,
                    now_us: int | None = None, sql_dir: str | None = None) -> ExchangeResult:
    """Bring an exchange database to the current schema; returns a result dict.

    ``sql_dir``: the directory of Taler's exchange SQL files ([exchangedb-postgres]
    SQL_DIR).  With it, the schema is Taler's own, built from those files; without
    it, a database Taler built is adopted as it is, and a new one gets the model.
    """
    if partitions is not None and partitions < 0:
        raise UsageError("-P/--partition takes a number >= 0")
    if role is not None and role not in exchange_schema.ROLES:
        raise UsageError(f"--role must be one of {', '.join(exchange_schema.ROLES)}, not {role!r}")
    conn = connect(uri, EXCHANGE_WHAT, autocommit=True)
    try:
        versioning.lock(conn)
        flavour = exchange_flavour(conn)
        if flavour == "legacy" and not reset:
            refuse_legacy(conn, EXCHANGE_WHAT)
        if sql_dir or flavour == "taler":
            return _taler_exchange_dbinit(conn, sql_dir, flavour, check, reset, run_gc,
                                          partitions, role, now_us)
        before = versioning.applied(conn, exchange_schema.PATCH_PREFIX)
        setup = read_setup(conn)
        pending = _pending(conn, exchange_schema.PATCHES, exchange_schema.PATCH_PREFIX)
        result: ExchangeResult = {"patches_before": before, "pending": [p.name for p in pending],
                                  "applied": [], "reset": False, "gc": None}
        if not reset:
            versioning.refuse_unknown(before, exchange_schema.PATCHES, EXCHANGE_WHAT)
        if check:
            return _checked(result, setup, partitions, role, reset)
        if reset:
            _drop_exchange(conn)
            result["reset"] = True
            setup = None
            pending = list(exchange_schema.PATCHES)
        if setup is not None:
            _refuse_changed_layout(setup, partitions, role)
            role, partitions, foreign_keys = setup
        else:
            role = role or "primary"
            # The ingres copy is untrusted and replication apply skips FK triggers
            # anyway; FKs there would only break replicated TRUNCATEs.
            foreign_keys = partitions is None and role != "ingres"
        versioning.ensure_versioning(conn)

        def render(name: str) -> list[versioning.Statement]:
            stmts: list[versioning.Statement] = list(exchange_schema.render(
                name, partitions, foreign_keys, inline_foreign_keys=role != "ingres"))
            if name == exchange_schema.PATCHES[0].name:
                # The role is recorded in the same transaction as the schema it describes.
                stmts = stmts + [lambda c: bookkeeping.create(c, role, partitions, foreign_keys)]
            return stmts

        result["applied"] = _apply(conn, pending, render, EXCHANGE_WHAT)
        if versioning.applied(conn, exchange_schema.PATCH_PREFIX):
            # Idempotent; moves the bookkeeping of an older taler-ops out of schema exchange.
            with conn.transaction():
                bookkeeping.create(conn, role, partitions, foreign_keys)
                serial_indexes(conn, role)
                analyze.create(conn, role)
        if run_gc:
            result["gc"] = gc.collect(conn, now_us=now_us)
        result["patches_after"] = versioning.applied(conn, exchange_schema.PATCH_PREFIX)
        result["setup"] = _setup_dict(read_setup(conn))
        return result
    finally:
        conn.close()


def _taler_exchange_dbinit(conn: psycopg.Connection[Any], sql_dir: str | None, flavour: Flavour | None,
                           check: bool, reset: bool, run_gc: bool, partitions: int | None,
                           role: Role | None, now_us: int | None) -> ExchangeResult:
    """exchange-dbinit on Taler's own schema: Taler's files, taler-ops' bookkeeping beside."""
    prefix = taler_sql.EXCHANGE_PREFIX
    if sql_dir:
        taler_sql.check_sql_dir(sql_dir, prefix, EXCHANGE_WHAT)
    if flavour in ("model", "legacy") and not reset:
        raise DatabaseNotReady(
            "the exchange database holds taler-ops' built-in model schema, not Taler's: "
            "refusing to apply Taler's SQL files over it (recreate it with -r, which drops "
            "all its data)")
    if reset and not sql_dir:
        raise UsageError("-r on a database built from Taler's SQL files needs Taler's drop.sql: "
                         "set [exchangedb-postgres] SQL_DIR")
    before = taler_sql.registered(conn, prefix)
    setup = read_setup(conn)
    pending = [n for n, _ in taler_sql.pending(conn, sql_dir, prefix)] if sql_dir else []
    result: ExchangeResult = {
        "flavour": "taler", "patches_before": before, "pending": pending,
        "unfinished_table_actions": taler_sql.unfinished_table_actions(conn) or 0,
        "applied": [], "reset": False, "gc": None, "warnings": [],
        "not_copied": {"tables": [], "columns": []}}
    warnings: list[str] = result["warnings"]
    if check:
        return _checked(result, setup, partitions, role, reset)
    if reset:
        with conn.transaction():
            analyze.drop(conn)
            bookkeeping.drop(conn)
            if flavour in ("model", "legacy"):
                _drop_exchange_model(conn)
        if flavour == "taler":
            assert sql_dir, "-r without SQL_DIR is refused above"
            # Taler's dbinit only logs a failing drop.sql and goes on; so do we, visibly.
            try:
                taler_sql.exchange_drop(conn, sql_dir, EXCHANGE_WHAT)
            except CreateError as exc:
                warnings.append(str(exc))
        result["reset"] = True
        setup, flavour = None, None
    if setup is not None:
        _refuse_changed_layout(setup, partitions, role)
        role, partitions, foreign_keys = setup
    else:
        role = role or "primary"
        if flavour == "taler":
            found = taler_partitions(conn)
            if partitions is not None and partitions != found:
                _refuse_changed_layout(Setup(role, found, found is None), partitions, None)
            partitions = found
        foreign_keys = partitions is None
    if sql_dir:
        catalog = taler_sql.exchange_catalog(conn)
        result["applied"] = taler_sql.exchange_build(conn, sql_dir, partitions, EXCHANGE_WHAT)
        if result["applied"] and before:
            # A release upgrade (not a first build): say what it added that is not copied.
            result["not_copied"] = taler_sql.not_copied(
                catalog, taler_sql.exchange_catalog(conn), _registry_columns())
    left = taler_sql.unfinished_table_actions(conn)
    if left:
        raise DatabaseNotReady(
            f"the exchange database has {left} queued table action(s) not yet run: build it "
            "with Taler's files ([exchangedb-postgres] SQL_DIR) or taler-exchange-dbinit first")
    with conn.transaction():
        bookkeeping.create(conn, role, partitions, foreign_keys)
        analyze.create(conn, role)
    if run_gc:
        result["gc"] = gc.collect(conn, now_us=now_us)
    result["pending"] = []
    result["patches_after"] = taler_sql.registered(conn, prefix)
    result["setup"] = _setup_dict(read_setup(conn))
    return result


def _registry_columns() -> dict[str, set[str]]:
    return {e.name: {c.name for c in e.copy_columns + e.mutable_columns}
            for e in registry.REPLICATED}


def taler_partitions(conn: psycopg.Connection[Any]) -> int | None:
    """The -P a Taler-built database was created with (None: plain tables with FKs).

    Read from ``exchange.reserves``, which every mode partitions except NULL.
    """
    row = conn.execute(
        "SELECT c.relkind, (SELECT count(*) FROM pg_inherits i WHERE i.inhparent = c.oid), "
        "(SELECT count(*) FROM pg_inherits i JOIN pg_class p ON p.oid = i.inhrelid "
        " WHERE i.inhparent = c.oid AND p.relname = 'reserves_default') "
        "FROM pg_class c WHERE c.oid = to_regclass('exchange.reserves')").fetchone()
    if row is None:             # tables still queued: the caller refuses that
        return None
    kind, parts, default = row
    if kind != "p":
        return None
    return 0 if default else int(parts)


def _checked(result: ExchangeResult, setup: Setup | None, partitions: int | None,
             role: Role | None, reset: bool) -> ExchangeResult:
    """--check: what is pending, and whether the asked layout matches; nothing changes."""
    if setup is not None and not reset:
        _refuse_changed_layout(setup, partitions, role)
    result["patches_after"] = result["patches_before"]
    result["setup"] = _setup_dict(setup)
    return result


def _setup_dict(setup: Setup | None) -> SetupDict | None:
    if setup is None:
        return None
    role, partitions, foreign_keys = setup
    return {"role": role, "partitions": partitions, "foreign_keys": foreign_keys}


def _refuse_changed_layout(setup: Setup, partitions: int | None, role: Role | None) -> None:
    have_role, have_partitions, _ = setup
    if role is not None and role != have_role:
        raise TalerOpsError(
            f"the exchange database was created as {have_role!r}; refusing to treat it as "
            f"{role!r} (recreate it with -r if that is really meant)")
    if partitions is not None and partitions != have_partitions:
        shown = "no partitioning" if have_partitions is None else f"-P {have_partitions}"
        raise TalerOpsError(
            f"the exchange database was created with {shown}; partitioning is fixed at "
            f"creation, refusing -P {partitions} (recreate it with -r if that is really meant)")


def _drop_exchange(conn: psycopg.Connection[Any]) -> None:
    with conn.transaction():
        analyze.drop(conn)
        bookkeeping.drop(conn)
        _drop_exchange_model(conn)


def _drop_exchange_model(conn: psycopg.Connection[Any]) -> None:
    if versioning.has_versioning(conn):
        names = versioning.applied(conn, exchange_schema.PATCH_PREFIX)
        if legacy_model(conn):   # the earlier model's registrations under Taler's names
            names = taler_sql.registered(conn, taler_sql.EXCHANGE_PREFIX) + names
        versioning.unregister(conn, reversed(names))
    conn.execute("DROP SCHEMA IF EXISTS exchange CASCADE")


def exchange_drop(uri: str) -> ExchangeDropResult:
    """Drop the exchange schema and unregister its patches (dbinit -r without re-creating)."""
    conn = connect(uri, EXCHANGE_WHAT, autocommit=True)
    try:
        versioning.lock(conn)
        before = versioning.applied(conn, exchange_schema.PATCH_PREFIX)
        existed = schema_exists(conn, "exchange")
        _drop_exchange(conn)
        return {"patches_before": before, "patches_after": [], "applied": [], "pending": [],
                "dropped": bool(existed or before), "setup": None}
    finally:
        conn.close()


def auditor_dbinit(uri: str, check: bool = False, restart: bool = False, drop: bool = False,
                   recreate: bool = True, sql_dir: str | None = None) -> AuditorResult:
    conn = connect(uri, AUDITOR_WHAT, autocommit=True)
    try:
        versioning.lock(conn)
        flavour = auditor_flavour(conn)
        if sql_dir or flavour == "taler":
            return _taler_auditor_dbinit(conn, sql_dir, flavour, check, restart, drop, recreate)
        before = versioning.applied(conn, auditor_schema.PATCH_PREFIX)
        pending = _pending(conn, auditor_schema.PATCHES, auditor_schema.PATCH_PREFIX)
        result: AuditorResult = {"patches_before": before, "pending": [p.name for p in pending],
                                 "applied": [], "restarted": False, "dropped": False}
        if not drop:
            versioning.refuse_unknown(before, auditor_schema.PATCHES, AUDITOR_WHAT)
        if check:
            result["patches_after"] = before
            return result
        if drop:
            existed = schema_exists(conn, "auditor") or bool(before)
            with conn.transaction():
                if versioning.has_versioning(conn):
                    versioning.unregister(conn, reversed(versioning.applied(conn, auditor_schema.PATCH_PREFIX)))
                conn.execute("DROP SCHEMA IF EXISTS auditor CASCADE")
                _drop_audit_bookkeeping(conn)
            result["dropped"] = existed
            pending = list(auditor_schema.PATCHES)
            if not recreate:
                result["patches_after"] = []
                return result
        had_schema = schema_exists(conn, "auditor")
        versioning.ensure_versioning(conn)
        result["applied"] = _apply(conn, pending, auditor_schema.render, AUDITOR_WHAT)
        _create_audit_bookkeeping(conn)
        if restart and not drop and had_schema:
            # After the patches: a database still at the first release's layout is
            # migrated (which empties the audit state anyway), then restarted.
            result["restarted"] = _restart_auditor(conn)
        result["patches_after"] = versioning.applied(conn, auditor_schema.PATCH_PREFIX)
        return result
    finally:
        conn.close()


def _taler_auditor_dbinit(conn: psycopg.Connection[Any], sql_dir: str | None, flavour: AuditorFlavour | None,
                          check: bool, restart: bool, drop: bool, recreate: bool) -> AuditorResult:
    """auditor-dbinit with Taler's files: -r runs restart.sql, -R drop.sql (as Taler's)."""
    prefix = taler_sql.AUDITOR_PREFIX
    if not sql_dir:
        if check:
            before = taler_sql.registered(conn, prefix)
            return {"flavour": "taler", "patches_before": before, "patches_after": before,
                    "pending": [], "applied": [], "restarted": False, "dropped": False}
        raise UsageError("the auditor database was built from Taler's SQL files: set "
                         "[auditordb-postgres] SQL_DIR so that auditor-dbinit uses them")
    taler_sql.check_sql_dir(sql_dir, prefix, AUDITOR_WHAT)
    if flavour == "model" and not drop:
        raise DatabaseNotReady(
            "the auditor database holds taler-ops' built-in model schema, not Taler's: "
            "refusing to apply Taler's SQL files over it (recreate it with -R)")
    before = taler_sql.registered(conn, prefix)
    result: AuditorResult = {"flavour": "taler", "patches_before": before, "applied": [],
                             "pending": [n for n, _ in taler_sql.pending(conn, sql_dir, prefix)],
                             "restarted": False, "dropped": False}
    if check:
        result["patches_after"] = before
        return result
    if drop:
        if flavour == "model":
            with conn.transaction():
                versioning.unregister(conn, reversed(versioning.applied(conn, auditor_schema.PATCH_PREFIX)))
                conn.execute("DROP SCHEMA IF EXISTS auditor CASCADE")
        elif flavour == "taler":
            taler_sql.auditor_drop(conn, sql_dir, AUDITOR_WHAT)
        with conn.transaction():
            _drop_audit_bookkeeping(conn)
        result["dropped"] = flavour is not None
        if not recreate:
            result["patches_after"] = taler_sql.registered(conn, prefix)
            return result
    elif restart and flavour == "taler":
        taler_sql.auditor_restart(conn, sql_dir, AUDITOR_WHAT)
        with conn.transaction():
            _clear_audit_bookkeeping(conn)
        result["restarted"] = True
    result["applied"] = taler_sql.auditor_build(conn, sql_dir, AUDITOR_WHAT)
    _create_audit_bookkeeping(conn)
    result["pending"] = []
    result["patches_after"] = taler_sql.registered(conn, prefix)
    return result


def _audit_state_tables(conn: psycopg.Connection[Any]) -> list[str]:
    """The auditor tables a restart clears: those Taler's restart.sql clears, which exist."""
    rows = conn.execute(
        "SELECT c.relname FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace "
        "WHERE n.nspname = 'auditor' AND c.relkind IN ('r', 'p')").fetchall()
    have = {r[0] for r in rows}
    return [t for t in auditor_schema.RESTART_CLEARS if t in have]


def _bookkeeping_tables(conn: psycopg.Connection[Any]) -> list[str]:
    """taler-ops' own audit state in the auditor database (schema taler_ops), as present."""
    return [t for t in auditor_schema.TALER_OPS_TABLES
            if one_row(conn.execute("SELECT to_regclass(%s) IS NOT NULL", (t,)))[0]]


def _create_audit_bookkeeping(conn: psycopg.Connection[Any]) -> None:
    with conn.transaction():
        for stmt in auditor_schema.TALER_OPS_DDL:
            conn.execute(stmt)


def _drop_audit_bookkeeping(conn: psycopg.Connection[Any]) -> None:
    """Only the audit's tables: schema taler_ops may also hold an exchange's bookkeeping."""
    for name in auditor_schema.TALER_OPS_TABLES:
        conn.execute(f"DROP TABLE IF EXISTS {name}")


def _clear_audit_bookkeeping(conn: psycopg.Connection[Any]) -> None:
    names = _bookkeeping_tables(conn)
    if names:
        conn.execute(f"TRUNCATE {', '.join(names)}")


def auditor_has_audit_state(uri: str) -> bool | None:
    """None without an auditor schema, else whether a restart would clear any row."""
    conn = connect(uri, AUDITOR_WHAT, autocommit=True)
    try:
        if not schema_exists(conn, "auditor"):
            return None
        names = [sql.Identifier("auditor", n) for n in _audit_state_tables(conn)]
        names += [sql.Identifier(*n.split(".")) for n in _bookkeeping_tables(conn)]
        for name in names:
            query = sql.SQL("SELECT EXISTS (SELECT 1 FROM {})").format(name)
            if one_row(conn.execute(query))[0]:
                return True
        return False
    finally:
        conn.close()


def _restart_auditor(conn: psycopg.Connection[Any]) -> bool:
    """Empty what Taler's restart.sql empties, and the audit's own per-coin state.

    The merchants' deposit confirmations and the exchange's signing keys stay;
    identity sequences go on (as Taler's DELETEs leave them).
    """
    with conn.transaction():
        names = _audit_state_tables(conn)
        if names:
            conn.execute(sql.SQL("TRUNCATE {}").format(
                sql.SQL(", ").join(sql.Identifier("auditor", n) for n in names)))
        _clear_audit_bookkeeping(conn)
    return True


