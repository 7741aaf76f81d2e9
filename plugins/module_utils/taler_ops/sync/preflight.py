"""Before a pass copies anything: patch levels, database roles, columns and types, hiding places.

A schema mismatch that an upgrade resolves ends the run with exit 5 and writes
nothing; one that no upgrade explains (drift, a relation that could hide rows
from the reader) halts.
"""

import logging
from typing import Any, NamedTuple, Sequence

import psycopg

from ..errors import ConfigError, DatabaseNotReady
from ..schema import bookkeeping, exchange_schema, spec, state, versioning
from ..schema.registry import Entry
from . import validate
from .connections import DEST_WHAT, SOURCE_WHAT, Connections
from .validate import qualified

log = logging.getLogger("taler_ops.sync")

# Both flavours' patches: Taler's own (exchange-NNNN) and the built-in model's.
PATCH_PREFIXES = ("exchange-", spec.PATCH_PREFIX)

# (table, what is wrong with it)
TableProblem = tuple[str, str]


class SafeCopySetup(NamedTuple):
    """How the safe copy was created (taler_ops.database_setup): what its DDL enforces."""

    partitions: int | None
    foreign_keys: bool


class Preflight(NamedTuple):
    setup: SafeCopySetup
    warnings: list[str]


def check(conns: Connections, entries: Sequence[Entry]) -> Preflight:
    """Patch levels (exit 5), roles (exit 6), the source's columns and types, hiding places (halt)."""
    src, dst = conns.src, conns.dst
    flavours = {side: state.exchange_flavour(conn)
                for side, conn in (("ingres", src), ("safe copy", dst))}
    src.rollback()
    if flavours["ingres"] != flavours["safe copy"]:
        # The tables are the same, but patch levels could not be compared.
        raise DatabaseNotReady(
            f"ingres is a {flavours['ingres']} schema and the safe copy a "
            f"{flavours['safe copy']} one (taler: built from Taler's SQL files; model: "
            "taler-ops' built-in model): create both the same way; nothing was copied")
    refuse_source_ahead(src, dst)
    state.assert_exchange_current(src, SOURCE_WHAT)
    state.assert_exchange_current(dst, DEST_WHAT)
    src.rollback()
    src_setup = bookkeeping.read_setup(src)
    src.rollback()
    dst_setup = bookkeeping.read_setup(dst)
    if dst_setup is None or dst_setup[0] != "safe-copy":
        raise ConfigError(
            f"the destination database was created as {dst_setup and dst_setup[0]!r}, not "
            "'safe-copy': refusing to sync into it (create it with exchange-dbinit --role "
            "safe-copy)")
    if src_setup is not None and src_setup[0] == "safe-copy":
        raise ConfigError("the source database is itself a 'safe-copy': the sync reads the "
                          "ingres copy (or the primary), refusing")
    warnings = []
    for side, conn in (("source", src), ("destination", dst)):
        problems, extras = schema_problems(conn, entries, destination=conn is dst)
        if conn is src:
            conn.rollback()
        for table, message in extras:
            warnings.append(f"{side} table {table}: {message} (not copied)")
            log.warning("%s table %s: %s (not copied)", side, table, message)
        if problems:
            table, message = problems[0]
            raise conns.halt(table, None, validate.SCHEMA_DRIFT, f"{side}: {message}")
    hiding = hiding_places(src, entries)
    src.rollback()
    if hiding:
        table, message = hiding[0]
        raise conns.halt(table, None, validate.HIDDEN_ROWS, message)
    return Preflight(SafeCopySetup(dst_setup[1], dst_setup[2]), warnings)


def _level(patches: list[str]) -> str:
    return patches[-1] if patches else "no patch"


def refuse_source_ahead(src: psycopg.Connection[Any], dst: psycopg.Connection[Any],
                        in_snapshot: bool = False) -> None:
    """A schema the safe copy does not have yet arrived on ingres: exit 5, write nothing.

    With streaming replication the ingres standby follows the primary's
    schema by itself, so after an exchange upgrade it is ahead of the safe
    copy until the upgrade playbook has migrated the safe copy too.
    ``in_snapshot``: read ingres in the pass's snapshot (kept open), so a
    patch and rows committed together are never split between the check
    and the copy.
    """
    have: dict[str, list[str]] = {}
    for side, conn in (("ingres", src), ("safe copy", dst)):
        have[side] = [p for prefix in PATCH_PREFIXES for p in versioning.applied(conn, prefix)]
        if conn is src and not in_snapshot:
            conn.rollback()
    behind = sorted(set(have["safe copy"]) - set(have["ingres"]))
    if behind:
        # Never legitimate: an upgrade migrates ingres before the safe copy.
        raise DatabaseNotReady(
            f"ingres lacks patch {behind[0]}, which the safe copy has (ingres at "
            f"{_level(have['ingres'])}, safe copy at {_level(have['safe copy'])}): its "
            "_v.patches is outdated or was tampered with; nothing was copied")
    ahead = sorted(set(have["ingres"]) - set(have["safe copy"]))
    if not ahead:
        return
    unknown = sorted(set(ahead) - {p.name for p in exchange_schema.PATCHES})
    raise DatabaseNotReady(
        f"the safe copy is at {_level(have['safe copy'])}, ingres at {_level(have['ingres'])}: "
        "run the upgrade (playbooks/upgrade.yml) before the sync can go on"
        + (f"; {unknown[0]} is unknown to this taler-ops, so upgrade taler-ops first"
           if unknown else "") + "; nothing was copied")


def hiding_places(conn: psycopg.Connection[Any], entries: Sequence[Entry]) -> list[TableProblem]:
    """[(table, why)] where the source could hide rows from the sync's reader.

    A SELECT on a view, a foreign table, a table with rules, or under row-level
    security may return fewer rows than are stored; each source relation and
    every partition under it must be a plain table without any of that.
    """
    out = []
    for entry in entries:
        rows = conn.execute(
            "SELECT c.relname, c.relkind, c.relrowsecurity OR c.relforcerowsecurity, "
            "EXISTS (SELECT 1 FROM pg_catalog.pg_rewrite r WHERE r.ev_class = c.oid), "
            "EXISTS (SELECT 1 FROM pg_catalog.pg_policy p WHERE p.polrelid = c.oid) "
            "FROM pg_catalog.pg_class c WHERE c.oid IN ("
            " SELECT %s::regclass UNION"
            " SELECT relid FROM pg_catalog.pg_partition_tree(%s::regclass))",
            (qualified(entry.name), qualified(entry.name))).fetchall()
        for rel, kind, rls, rules, policies in rows:
            what = f"source relation exchange.{rel} (for {entry.name})"
            if kind not in ("r", "p"):
                out.append((entry.name, f"{what} is not a table (relkind {kind!r})"))
            elif rules:
                out.append((entry.name, f"{what} has rewrite rules"))
            elif rls or policies:
                out.append((entry.name, f"{what} has row-level security or policies"))
    return out


def schema_problems(conn: psycopg.Connection[Any], entries: Sequence[Entry],
                    destination: bool = False) -> tuple[list[TableProblem], list[TableProblem]]:
    """([(table, drift)], [(table, extra column)]) of one side against the registry.

    An extra column (a Taler release newer than this taler-ops, docs/upgrade.md) is
    not copied: on the safe copy it keeps its default.  One the safe copy
    (``destination``) cannot default (NOT NULL, no default) is drift: the sync
    refuses rather than invent a value.
    """
    rows = conn.execute(
        """SELECT c.relname, a.attname, format_type(a.atttypid, a.atttypmod),
                  a.attnotnull AND NOT a.atthasdef AND a.attidentity = '' AND a.attgenerated = ''
             FROM pg_class c
             JOIN pg_namespace n ON n.oid = c.relnamespace AND n.nspname = 'exchange'
             JOIN pg_attribute a ON a.attrelid = c.oid AND a.attnum > 0 AND NOT a.attisdropped
            WHERE c.relkind IN ('r', 'p')""").fetchall()
    have: dict[str, dict[str, str]] = {}
    must_fill: dict[str, set[str]] = {}
    for rel, att, typ, required in rows:
        have.setdefault(rel, {})[att] = typ
        if required:
            must_fill.setdefault(rel, set()).add(att)
    problems: list[TableProblem] = []
    extras: list[TableProblem] = []
    amount = conn.execute(
        """SELECT a.attname, format_type(a.atttypid, a.atttypmod)
             FROM pg_type t JOIN pg_namespace n ON n.oid = t.typnamespace
             JOIN pg_attribute a ON a.attrelid = t.typrelid AND a.attnum > 0
                                AND NOT a.attisdropped
            WHERE n.nspname = 'exchange' AND t.typname = 'taler_amount'
            ORDER BY a.attnum""").fetchall()
    if [tuple(r) for r in amount] != [("val", "bigint"), ("frac", "integer")]:
        problems.append(("taler_amount", "type exchange.taler_amount is not (val bigint, "
                                         f"frac integer) but {amount}"))
    for entry in entries:
        cols = have.get(entry.name)
        if cols is None:
            problems.append((entry.name, f"table exchange.{entry.name} is missing"))
            continue
        for col in entry.copy_columns:
            typ = cols.get(col.name)
            if typ is None:
                problems.append((entry.name, f"column {col.name} is missing"))
            elif typ != col.sql_type:
                problems.append((entry.name, f"column {col.name} has type {typ}, "
                                             f"expected {col.sql_type}"))
        known = {c.name for c in entry.copy_columns + entry.mutable_columns}
        for name in sorted(set(cols) - known):
            if destination and name in must_fill.get(entry.name, ()):
                # The sync inserts the columns it knows; this one it would have to invent.
                problems.append((entry.name, f"column {name} is NOT NULL without a default "
                                             "and unknown to taler-ops: it cannot be copied"))
            else:
                extras.append((entry.name, f"unexpected column {name}"))
    return problems, extras
