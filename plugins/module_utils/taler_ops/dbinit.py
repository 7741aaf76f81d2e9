"""exchange-dbinit and auditor-dbinit: create, upgrade, reset, GC.

Each missing patch is applied in its own transaction together with its
registration in ``_v.patches``; a whole run holds an advisory lock so racing
runs apply every patch once and both succeed.  ``check`` only reads.
"""

import psycopg
from psycopg import sql

from . import auditor_schema, bookkeeping, exchange_schema, gc, versioning
from .db import connect
from .errors import CreateError, TalerOpsError, UsageError

EXCHANGE_WHAT = "exchange database"
AUDITOR_WHAT = "auditor database"


def _pending(conn, patches, prefix):
    have = set(versioning.applied(conn, prefix))
    return [p for p in patches if p.name not in have]


def _schema_exists(conn, schema):
    return conn.execute("SELECT to_regnamespace(%s) IS NOT NULL", (schema,)).fetchone()[0]


def read_setup(conn):
    """(role, partitions, foreign_keys), or None: see bookkeeping.read_setup."""
    return bookkeeping.read_setup(conn)


def _apply(conn, patches, render, what):
    applied = []
    for patch in patches:
        try:
            if versioning.apply_patch(conn, patch, render(patch.name)):
                applied.append(patch.name)
        except psycopg.Error as exc:
            reason = " ".join(str(exc).split())
            raise CreateError(f"applying patch {patch.name} to the {what} failed: {reason}") from None
    return applied


def exchange_dbinit(uri, check=False, reset=False, run_gc=False, partitions=None, role=None,
                    now_us=None):
    """Bring an exchange database to the current schema; returns a result dict."""
    if partitions is not None and partitions < 0:
        raise UsageError("-P/--partition takes a number >= 0")
    if role is not None and role not in exchange_schema.ROLES:
        raise UsageError(f"--role must be one of {', '.join(exchange_schema.ROLES)}, not {role!r}")
    conn = connect(uri, EXCHANGE_WHAT, autocommit=True)
    try:
        versioning.lock(conn)
        before = versioning.applied(conn, "exchange-")
        setup = read_setup(conn)
        pending = _pending(conn, exchange_schema.PATCHES, "exchange-")
        result = {"patches_before": before, "pending": [p.name for p in pending],
                  "applied": [], "reset": False, "gc": None}
        if not reset:
            versioning.refuse_unknown(before, exchange_schema.PATCHES, EXCHANGE_WHAT)
        if check:
            if setup is not None and not reset:
                _refuse_changed_layout(setup, partitions, role)
            result["patches_after"] = before
            result["setup"] = _setup_dict(setup)
            return result
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

        def render(name):
            stmts = exchange_schema.render(name, partitions, foreign_keys)
            if name == exchange_schema.PATCHES[0].name:
                # The role is recorded in the same transaction as the schema it describes.
                stmts = stmts + [lambda c: bookkeeping.create(c, role, partitions, foreign_keys)]
            return stmts

        result["applied"] = _apply(conn, pending, render, EXCHANGE_WHAT)
        if versioning.applied(conn, "exchange-"):
            # Idempotent; moves the bookkeeping of an older taler-ops out of schema exchange.
            with conn.transaction():
                bookkeeping.create(conn, role, partitions, foreign_keys)
        if run_gc:
            result["gc"] = gc.collect(conn, now_us=now_us)
        result["patches_after"] = versioning.applied(conn, "exchange-")
        result["setup"] = _setup_dict(read_setup(conn))
        return result
    finally:
        conn.close()


def _setup_dict(setup):
    if setup is None:
        return None
    role, partitions, foreign_keys = setup
    return {"role": role, "partitions": partitions, "foreign_keys": foreign_keys}


def _refuse_changed_layout(setup, partitions, role):
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


def _drop_exchange(conn):
    with conn.transaction():
        if versioning.has_versioning(conn):
            names = versioning.applied(conn, "exchange-")
            versioning.unregister(conn, reversed(names))
        conn.execute("DROP SCHEMA IF EXISTS exchange CASCADE")
        bookkeeping.drop(conn)


def exchange_drop(uri):
    """Drop the exchange schema and unregister its patches (dbinit -r without re-creating)."""
    conn = connect(uri, EXCHANGE_WHAT, autocommit=True)
    try:
        versioning.lock(conn)
        before = versioning.applied(conn, "exchange-")
        existed = _schema_exists(conn, "exchange")
        _drop_exchange(conn)
        return {"patches_before": before, "patches_after": [], "applied": [], "pending": [],
                "dropped": bool(existed or before), "setup": None}
    finally:
        conn.close()


def auditor_dbinit(uri, check=False, restart=False, drop=False, recreate=True):
    conn = connect(uri, AUDITOR_WHAT, autocommit=True)
    try:
        versioning.lock(conn)
        before = versioning.applied(conn, "auditor-")
        pending = _pending(conn, auditor_schema.PATCHES, "auditor-")
        result = {"patches_before": before, "pending": [p.name for p in pending],
                  "applied": [], "restarted": False, "dropped": False}
        if not drop:
            versioning.refuse_unknown(before, auditor_schema.PATCHES, AUDITOR_WHAT)
        if check:
            result["patches_after"] = before
            return result
        if drop:
            existed = _schema_exists(conn, "auditor") or bool(before)
            with conn.transaction():
                if versioning.has_versioning(conn):
                    versioning.unregister(conn, reversed(versioning.applied(conn, "auditor-")))
                conn.execute("DROP SCHEMA IF EXISTS auditor CASCADE")
            result["dropped"] = existed
            pending = list(auditor_schema.PATCHES)
            if not recreate:
                result["patches_after"] = []
                return result
        elif restart and _schema_exists(conn, "auditor"):
            result["restarted"] = _restart_auditor(conn)
        versioning.ensure_versioning(conn)
        result["applied"] = _apply(conn, pending, auditor_schema.render, AUDITOR_WHAT)
        result["patches_after"] = versioning.applied(conn, "auditor-")
        return result
    finally:
        conn.close()


def _audit_state_tables(conn):
    """Every auditor table a restart clears (all but the deposit confirmations)."""
    rows = conn.execute(
        "SELECT c.relname FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace "
        "WHERE n.nspname = 'auditor' AND c.relkind IN ('r', 'p') ORDER BY 1").fetchall()
    return [r[0] for r in rows if r[0] not in auditor_schema.KEPT_ON_RESTART]


def auditor_has_audit_state(uri):
    """None without an auditor schema, else whether a restart would clear any row."""
    conn = connect(uri, AUDITOR_WHAT, autocommit=True)
    try:
        if not _schema_exists(conn, "auditor"):
            return None
        for name in _audit_state_tables(conn):
            query = sql.SQL("SELECT EXISTS (SELECT 1 FROM {})").format(
                sql.Identifier("auditor", name))
            if conn.execute(query).fetchone()[0]:
                return True
        return False
    finally:
        conn.close()


def _restart_auditor(conn):
    """Clear progress, balances, running state and findings; keep deposit confirmations."""
    with conn.transaction():
        names = _audit_state_tables(conn)
        if names:
            conn.execute(sql.SQL("TRUNCATE {} RESTART IDENTITY").format(
                sql.SQL(", ").join(sql.Identifier("auditor", n) for n in names)))
    return True


def assert_exchange_current(conn, what=EXCHANGE_WHAT):
    """For every runtime component: exit 5 unless the exchange schema is exactly current."""
    versioning.check_current(conn, exchange_schema.PATCHES, what)


def assert_auditor_current(conn, what=AUDITOR_WHAT):
    versioning.check_current(conn, auditor_schema.PATCHES, what)
