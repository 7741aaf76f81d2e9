"""Holes: serials missing below a watermark, which a transaction committed late may still fill.

Serials are handed out at insert, but transactions commit in another order, so
a pass can see serial 102 before 101.  Every gap a batch leaves becomes a hole
(``taler_ops.sync_holes``), searched again in every later pass's snapshot;
rows appearing there are copied like new rows.  A hole expires once the
source's stream clock moved ``hole_horizon`` past the pass that first saw it
and every transaction then running ended; a row appearing in an expired hole
halts (late-row), as the watermark went past it long ago.
"""

from datetime import datetime
from typing import Any, NamedTuple, Sequence

import psycopg

from ..schema import bookkeeping
from ..schema.registry import Entry
from .validate import q, qualified


class Origin(NamedTuple):
    """What a hole remembers of the pass that first saw it: its horizon starts there."""

    source_clock: datetime | None
    source_xmax: int | None
    pass_id: int


class Hole(NamedTuple):
    """Serials lo < s < hi a pass found missing below the watermark."""

    lo: int
    hi: int
    expired: bool
    source_clock: datetime | None
    source_xmax: int | None
    pass_id: int
    seen_tsz: datetime

    @property
    def origin(self) -> Origin:
        return Origin(self.source_clock, self.source_xmax, self.pass_id)


class SourceClock(NamedTuple):
    """The source's stream clock and snapshot bounds in one pass's snapshot."""

    clock: datetime | None
    xmin: int
    xmax: int


def source_clock(src: psycopg.Connection[Any]) -> SourceClock:
    """(clock, xmin, xmax) of the source in the pass's snapshot: the holes' horizon.

    The clock is the one the replication stream carries, so a stalled stream
    stops it and no hole expires while rows cannot arrive: on a hot standby
    the primary's commit time of the last replayed transaction, on a logical
    subscriber the publisher's send time of the last message (the slowest
    subscription), otherwise (a primary) its own time.  xmin/xmax: a hole
    only expires once every transaction running when it was seen has ended.
    The ingres owner can move this clock; then a late row halts (late-row).
    """
    row = src.execute(
        "SELECT pg_catalog.pg_is_in_recovery(), pg_catalog.pg_last_xact_replay_timestamp(), "
        "pg_catalog.statement_timestamp(), "
        "pg_catalog.pg_snapshot_xmin(pg_catalog.pg_current_snapshot())::text::int8, "
        "pg_catalog.pg_snapshot_xmax(pg_catalog.pg_current_snapshot())::text::int8, "
        "(SELECT count(*) FROM pg_catalog.pg_subscription s WHERE s.subdbid = "
        " (SELECT oid FROM pg_catalog.pg_database WHERE datname = current_database())), "
        # The slowest subscription; NULL as soon as one has no running worker.
        "(SELECT CASE WHEN bool_and(st.last_msg_send_time IS NOT NULL) "
        "             THEN min(st.last_msg_send_time) END "
        "   FROM pg_catalog.pg_subscription s "
        "   LEFT JOIN pg_catalog.pg_stat_subscription st ON st.subid = s.oid "
        "        AND st.relid IS NULL "
        "  WHERE s.subdbid = (SELECT oid FROM pg_catalog.pg_database "
        "                      WHERE datname = current_database()))").fetchone()
    assert row is not None      # a SELECT without FROM returns its one row
    recovery, replayed, now, xmin, xmax, subscriptions, sent = row
    if recovery:
        clock = replayed
    elif subscriptions:
        clock = sent
    else:
        clock = now
    return SourceClock(clock, xmin, xmax)


def read(dst: psycopg.Connection[Any]) -> dict[str, list[Hole]]:
    """Every recorded hole, open and expired, per table in serial order."""
    out: dict[str, list[Hole]] = {}
    for row in dst.execute(
            f"SELECT table_name, lo, hi, expired_tsz IS NOT NULL, source_clock, source_xmax, "
            f"pass_id, seen_tsz FROM {bookkeeping.HOLES} ORDER BY table_name, lo"):
        out.setdefault(row[0], []).append(Hole(*row[1:]))
    return out


def first_rows(src: psycopg.Connection[Any], entry: Entry, holes: Sequence[Hole]) -> dict[int, int]:
    """{hole.lo: the smallest serial the source holds in it now}, for the holes that hold one.

    Only stored serials are read from the source here, in the pass's snapshot.
    """
    s = q(entry.serial)
    filled = src.execute(
        f"SELECT h.lo, (SELECT min(t.{s}) FROM {qualified(entry.name)} t "
        f"WHERE t.{s} > h.lo AND t.{s} < h.hi) FROM unnest(%s::int8[], %s::int8[]) h(lo, hi)",
        ([h.lo for h in holes], [h.hi for h in holes])).fetchall()
    return {lo: serial for lo, serial in filled if serial is not None}


def record(dst: psycopg.Connection[Any], entry: Entry, lo: int, hi: int, origin: Origin,
           hole: Hole | None) -> None:
    """Serials missing among the batch's rows become holes (judged on the destination).

    A new hole remembers the source's clock and xmax of this pass (``origin``);
    the pieces of a hole being filled keep the hole's own, so filling never
    extends a horizon.  Filling a hole: the batch starts at the hole's
    (remaining) lower end, and what is left above the batch stays a hole; a
    further batch in the same hole starts there and replaces it again.
    """
    s = q(entry.serial)
    if hole is not None:
        origin = hole.origin
        # A cut taken while this hole was open did not hold these rows: spoiled.
        dst.execute(f"UPDATE {bookkeeping.CUTS} SET spoiled = true "
                    "WHERE pass_id >= %s AND NOT spoiled", (hole.pass_id,))
        dst.execute(f"DELETE FROM {bookkeeping.HOLES} WHERE table_name = %s AND lo = %s",
                    (entry.name, lo))
    dst.execute(
        f"INSERT INTO {bookkeeping.HOLES} (table_name, lo, hi, source_clock, source_xmax, "
        "pass_id) SELECT %(t)s, g.prev, g.s, %(clock)s, %(xmax)s, %(pass)s FROM "
        f"(SELECT {s} AS s, lag({s}, 1, %(lo)s) OVER (ORDER BY {s}) AS prev "
        f"FROM {qualified(entry.name)} WHERE {s} > %(lo)s AND {s} <= %(hi)s) g "
        "WHERE g.s > g.prev + 1",
        {"t": entry.name, "lo": lo, "hi": hi, "clock": origin.source_clock,
         "xmax": origin.source_xmax, "pass": origin.pass_id})
    if hole is not None and hi + 1 < hole.hi:
        dst.execute(
            f"INSERT INTO {bookkeeping.HOLES} (table_name, lo, hi, source_clock, source_xmax, "
            "pass_id, seen_tsz) VALUES (%s, %s, %s, %s, %s, %s, %s)",
            (entry.name, hi, hole.hi) + tuple(origin) + (hole.seen_tsz,))


def expire(dst: psycopg.Connection[Any], tables: list[str], clock: SourceClock,
           horizon: float) -> None:
    """At the end of a complete pass: open holes whose horizon passed expire.

    Every open hole was searched in this pass's snapshot (or made in it) and
    found empty, so expiring it here is judged on this one snapshot.
    """
    if clock.clock is None:
        return
    # Holes seen while the stream clock was unknown start their horizon now.
    dst.execute(
        f"UPDATE {bookkeeping.HOLES} SET source_clock = %s "
        "WHERE source_clock IS NULL AND expired_tsz IS NULL", (clock.clock,))
    dst.execute(
        f"UPDATE {bookkeeping.HOLES} SET expired_tsz = now() "
        "WHERE expired_tsz IS NULL AND table_name = ANY(%s) "
        "AND source_clock + make_interval(secs => %s) <= %s AND source_xmax <= %s",
        (tables, horizon, clock.clock, clock.xmin))
