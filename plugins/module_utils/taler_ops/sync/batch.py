"""One batch: the source's rows lo < serial <= hi, streamed into the safe copy and checked there.

Binary COPY from the source goes straight into the destination table inside
the batch transaction, never decoded in Python.  Before commit, on the
destination: the rows must be exactly the asked-for range, the row rules
(validate.row_check) and the relation rules the destination does not enforce
itself must hold; the serials missing in the batch become holes.  Rows, holes
and watermark commit together, so a crash neither duplicates nor skips.

A violation rolls the batch back; the slow path (``_diagnose``) streams it
again, in the same snapshot, into an unconstrained temporary table to name the
first offending serial and rule.
"""

import logging
from typing import Any, NamedTuple

import psycopg
from psycopg import Copy

from ..errors import TalerOpsError
from ..schema.registry import Entry
from . import holes, validate, watermarks
from .connections import Connections
from .failures import ConnectionLost, clear_halts, connection_problem, one_line
from .preflight import SafeCopySetup
from .validate import q, qualified

log = logging.getLogger("taler_ops.sync")

CHUNK_BYTES = 1 << 17        # bytes handed to libpq per write while streaming


class Violation(NamedTuple):
    """The first rule a batch breaks: what the halt names."""

    table: str
    serial: int | None
    rule: str
    detail: str


def copy_batch(conns: Connections, entry: Entry, lo: int, hi: int, setup: SafeCopySetup,
               origin: holes.Origin, hole: holes.Hole | None = None) -> int:
    """One destination transaction: rows (lo, hi], their checks, holes and watermark.

    Returns the number of rows copied; a violation halts (raised, recorded).
    ``origin``: what new holes remember of this pass.  ``hole``: the rows fill
    (part of) this hole instead of moving the watermark.
    """
    dst = conns.dst
    foreign_keys = setup.foreign_keys and not conns.replica_role
    enforced = validate.globally_enforced_keys(entry, setup.partitions)
    target = qualified(entry.name)
    checks = validate.relation_checks(entry, target, target,
                                      enforced_keys=enforced, foreign_keys=foreign_keys)
    violation = None
    params = {"lo": lo, "hi": hi}
    copied = 0
    try:
        with dst.transaction():
            copied = _stream(conns, entry, lo, hi, target)
            violation = _range_violation(dst, entry, lo, hi, copied)
            if violation is None:
                row = dst.execute(validate.row_check(entry, target), params).fetchone()
                if row:
                    violation = _row_violation(entry, *row)
            if violation is None and checks:
                _probe_by_index(dst)
                for rule, query in checks:
                    row = dst.execute(query, params).fetchone()
                    if row:
                        violation = Violation(entry.name, row[0], rule, f"{entry.name} {row[1]}")
                        break
            if violation is not None:
                raise psycopg.Rollback()
            holes.record(dst, entry, lo, hi, origin, hole)
            watermarks.advance(dst, entry.name, copied, hi if hole is None else None)
            clear_halts(dst, entry.name, hi)
    except psycopg.errors.IntegrityError as exc:
        violation = _diagnose(conns, entry, lo, hi, exc)
    except psycopg.Error as exc:
        if connection_problem(exc):
            raise ConnectionLost(f"lost a database connection while copying {entry.name}: "
                                 f"{one_line(exc)}") from None
        if isinstance(exc, (psycopg.errors.DataError, psycopg.errors.InvalidBinaryRepresentation,
                            psycopg.errors.BadCopyFileFormat)):
            violation = _diagnose(conns, entry, lo, hi, exc)
        else:
            raise TalerOpsError(f"copying {entry.name} serials {lo + 1}..{hi} failed: "
                                f"{one_line(exc)}") from None
    if violation:
        raise conns.halt(*violation)
    return copied


def _copy_out_sql(entry: Entry, lo: int, hi: int) -> str:
    s = q(entry.serial)
    return (f"COPY (SELECT {validate.copy_select_list(entry)} FROM {qualified(entry.name)} "
            f"WHERE {s} > {int(lo)} AND {s} <= {int(hi)} ORDER BY {s}) "
            "TO STDOUT (FORMAT BINARY)")


def _stream(conns: Connections, entry: Entry, lo: int, hi: int, target: str) -> int:
    """Stream (lo, hi] from the source into ``target`` inside the current dst transaction.

    Returns the number of rows the destination took.  The source COPY is
    always read to its end, even when the destination fails, so the source
    transaction (and its snapshot) survives for the diagnosis.
    """
    copy_in = f"COPY {target} ({validate.column_list(entry)}) FROM STDIN (FORMAT BINARY)"
    failure = None
    with conns.dst.cursor() as dcur, conns.src.cursor() as scur:
        with dcur.copy(copy_in) as sink:
            with scur.copy(_copy_out_sql(entry, lo, hi)) as source:
                # The source sends one message per row; hand them on in bigger
                # chunks to save a libpq round of calls per row.
                chunk = bytearray()
                for block in source:
                    chunk += block
                    if len(chunk) >= CHUNK_BYTES:
                        failure = failure or _put(sink, chunk)
                        chunk = bytearray()
                if chunk:
                    failure = failure or _put(sink, chunk)
            if failure is not None:
                raise failure
        return dcur.rowcount


def _put(sink: Copy, data: bytearray) -> psycopg.Error | None:
    """Write on; a destination that refused the data fails the batch once the source is drained."""
    try:
        sink.write(data)
    except psycopg.Error as exc:
        return exc
    return None


def _probe_by_index(dst: psycopg.Connection[Any]) -> None:
    """Checks probe a batch's rows into big tables: never scan the big table.

    A table that just grew from nothing has stale statistics, and a hash
    anti-join would then read the whole parent table for every batch.
    """
    for setting in ("enable_seqscan", "enable_hashjoin", "enable_mergejoin"):
        dst.execute(f"SET LOCAL {setting} = off")


def _range_violation(dst: psycopg.Connection[Any], entry: Entry, lo: int, hi: int,
                     copied: int) -> Violation | None:
    """The source may send rows it was not asked for: they must land in (lo, hi] only."""
    s = q(entry.serial)
    row = dst.execute(
        f"SELECT count(*) FROM {qualified(entry.name)} WHERE {s} > %s AND {s} <= %s",
        (lo, hi)).fetchone()
    assert row is not None      # an aggregate returns its one row
    have: int = row[0]
    if have == copied:
        return None
    return Violation(entry.name, hi, validate.OUT_OF_RANGE, (
        f"{entry.name}: asked for serials {lo + 1}..{hi}, the source sent {copied} rows of "
        f"which {have} are in that range"))


def _row_violation(entry: Entry, serial: int, text: str) -> Violation:
    """From row_check's 'rule<TAB>column<TAB>detail'."""
    rule, column, detail = text.split("\t", 2)
    return Violation(entry.name, serial, rule, f"{entry.name}.{column} {detail}")


def _diagnose(conns: Connections, entry: Entry, lo: int, hi: int, exc: psycopg.Error) -> Violation:
    """Stage the batch in a temporary table on the destination and find its first offence."""
    dst = conns.dst
    reason = one_line(exc)
    stage = "pg_temp.taler_ops_sync_stage"
    found: list[tuple[int, str, str]] = []
    try:
        with dst.transaction():
            # Same column types, no constraints: every row of the batch gets in.
            dst.execute(f"CREATE TEMPORARY TABLE {stage} ON COMMIT DROP AS "
                        f"SELECT {validate.column_list(entry)} "
                        f"FROM {qualified(entry.name)} WITH NO DATA")
            _stream(conns, entry, lo, hi, stage)
            row = dst.execute(validate.row_check(entry, stage), {"lo": lo, "hi": hi}).fetchone()
            if row:
                serial, text = row
                violation = _row_violation(entry, serial, text)
                found.append((serial, violation.rule, violation.detail))
            checks = validate.relation_checks(entry, stage, qualified(entry.name),
                                              enforced_keys=None, foreign_keys=False)
            _probe_by_index(dst)
            for rule, query in checks:
                row = dst.execute(query, {"lo": lo, "hi": hi}).fetchone()
                if row:
                    found.append((row[0], rule, f"{entry.name} {row[1]}"))
            raise psycopg.Rollback()
    except psycopg.Error as exc2:
        if connection_problem(exc2):
            raise ConnectionLost(f"lost a database connection: {one_line(exc2)}") from None
        log.warning("diagnosing %s serials %s..%s failed: %s", entry.name, lo + 1, hi,
                    one_line(exc2))
    if found:
        serial, rule, detail = min(found, key=lambda f: f[0])
        return Violation(entry.name, serial, rule, detail)
    return Violation(entry.name, None, "constraint",
                     f"{entry.name} serials {lo + 1}..{hi} rejected by the safe copy: {reason}")
