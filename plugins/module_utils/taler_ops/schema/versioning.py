"""Schema versioning in ``_v`` with Taler's semantics (versioning.sql).

``_v.patches`` records each applied patch; ``_v.register_patch`` refuses a
re-apply, a conflicting patch or a missing prerequisite, and runs inside the
patch's own transaction so a patch and its registration commit together.
Concurrent dbinit runs are serialised with an advisory lock, so two of them
racing both succeed and each patch is applied once.
"""

from collections.abc import Callable, Iterable, Sequence
from typing import Any

import psycopg

from .. import locks
from ..db import one_row
from ..errors import DatabaseNotReady
from .exchange_schema import Patch

# A patch's statement: SQL, or a function that runs its own statements on the connection.
Statement = str | Callable[[psycopg.Connection[Any]], None]

VERSIONING_SQL = r"""
CREATE SCHEMA IF NOT EXISTS _v;
COMMENT ON SCHEMA _v IS 'Schema versioning (taler-ops, compatible with Taler''s versioning.sql)';
CREATE TABLE IF NOT EXISTS _v.patches (
    patch_name  TEXT PRIMARY KEY,
    applied_tsz TIMESTAMPTZ NOT NULL DEFAULT now(),
    applied_by  TEXT NOT NULL,
    requires    TEXT[],
    conflicts   TEXT[]
);
CREATE OR REPLACE FUNCTION _v.register_patch(in_patch_name TEXT,
                                             in_requirements TEXT[] DEFAULT NULL,
                                             in_conflicts TEXT[] DEFAULT NULL)
RETURNS void LANGUAGE plpgsql AS $$
DECLARE
    missing TEXT[];
    clashing TEXT[];
BEGIN
    LOCK TABLE _v.patches IN EXCLUSIVE MODE;
    IF EXISTS (SELECT 1 FROM _v.patches WHERE patch_name = in_patch_name) THEN
        RAISE EXCEPTION 'Patch % is already applied', in_patch_name;
    END IF;
    SELECT array_agg(c) INTO clashing
      FROM unnest(in_conflicts) AS c JOIN _v.patches p ON p.patch_name = c;
    IF clashing IS NOT NULL THEN
        RAISE EXCEPTION 'Patch % conflicts with applied patch(es) %', in_patch_name, clashing;
    END IF;
    SELECT array_agg(r) INTO missing
      FROM unnest(in_requirements) AS r
     WHERE NOT EXISTS (SELECT 1 FROM _v.patches p WHERE p.patch_name = r);
    IF missing IS NOT NULL THEN
        RAISE EXCEPTION 'Patch % requires missing patch(es) %', in_patch_name, missing;
    END IF;
    INSERT INTO _v.patches (patch_name, applied_by, requires, conflicts)
         VALUES (in_patch_name, current_user, in_requirements, in_conflicts);
END;
$$;
CREATE OR REPLACE FUNCTION _v.unregister_patch(in_patch_name TEXT)
RETURNS void LANGUAGE plpgsql AS $$
DECLARE
    dependants TEXT[];
BEGIN
    LOCK TABLE _v.patches IN EXCLUSIVE MODE;
    SELECT array_agg(patch_name) INTO dependants
      FROM _v.patches WHERE in_patch_name = ANY(requires);
    IF dependants IS NOT NULL THEN
        RAISE EXCEPTION 'Patch % is required by %, cannot unregister', in_patch_name, dependants;
    END IF;
    DELETE FROM _v.patches WHERE patch_name = in_patch_name;
    IF NOT FOUND THEN
        RAISE EXCEPTION 'Patch % is not applied', in_patch_name;
    END IF;
END;
$$;
"""


def lock(conn: psycopg.Connection[Any]) -> None:
    """Session-level advisory lock held for a whole dbinit run."""
    locks.hold(conn, locks.DBINIT)


def unlock(conn: psycopg.Connection[Any]) -> None:
    locks.release(conn, locks.DBINIT)


def has_versioning(conn: psycopg.Connection[Any]) -> bool:
    row = one_row(conn.execute("SELECT to_regclass('_v.patches') IS NOT NULL"))
    return bool(row[0])


def ensure_versioning(conn: psycopg.Connection[Any]) -> None:
    with conn.transaction():
        if not has_versioning(conn):
            conn.execute(VERSIONING_SQL)


def applied(conn: psycopg.Connection[Any], prefix: str) -> list[str]:
    if not has_versioning(conn):
        return []
    rows = conn.execute(
        "SELECT patch_name FROM _v.patches WHERE patch_name LIKE %s ORDER BY patch_name",
        (prefix + "%",)).fetchall()
    return [r[0] for r in rows]


def apply_patch(conn: psycopg.Connection[Any], patch: Patch, statements: Sequence[Statement]) -> bool:
    """Apply one patch atomically; False if it was already applied (by a racing run)."""
    with conn.transaction():
        conn.execute("LOCK TABLE _v.patches IN EXCLUSIVE MODE")
        done = conn.execute("SELECT 1 FROM _v.patches WHERE patch_name = %s",
                            (patch.name,)).fetchone()
        if done:
            return False
        conn.execute("SELECT _v.register_patch(%s, %s, %s)",
                     (patch.name, list(patch.requires) or None, list(patch.conflicts) or None))
        for stmt in statements:
            # A callable runs its own statements (e.g. bookkeeping.create) in this transaction.
            stmt(conn) if callable(stmt) else conn.execute(stmt)
    return True


def unregister(conn: psycopg.Connection[Any], names: Iterable[str]) -> None:
    for name in names:
        conn.execute("SELECT _v.unregister_patch(%s)", (name,))


def refuse_unknown(have: Iterable[str], patches: Sequence[Patch], what: str) -> None:
    """An older taler-ops must not upgrade, GC, read or vouch for a schema it does not know."""
    unknown = sorted(set(have) - {p.name for p in patches})
    if unknown:
        raise DatabaseNotReady(
            f"the {what} has patch {unknown[0]}, which this taler-ops does not know: the "
            "schema is newer than this tool; upgrade taler-ops")


def check_current(conn: psycopg.Connection[Any], patches: Sequence[Patch], what: str) -> None:
    """Raise DatabaseNotReady unless exactly ``patches`` (and none newer) are applied."""
    # "model-exchange-0001" -> "model-exchange-": the flavour's prefix, so the
    # patches of another flavour (Taler's "exchange-NNNN") are not counted here.
    prefix = patches[0].name.rsplit("-", 1)[0] + "-"
    have = applied(conn, prefix)
    missing = [p.name for p in patches if p.name not in have]
    if missing:
        raise DatabaseNotReady(
            f"the {what} is outdated: patch {missing[0]} is missing"
            + (f" (and {len(missing) - 1} more)" if len(missing) > 1 else "")
            + "; run dbinit first")
    refuse_unknown(have, patches, what)
