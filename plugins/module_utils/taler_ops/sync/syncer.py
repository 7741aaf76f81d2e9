"""One source/destination pair and its passes: each pass copies one consistent snapshot.

A pass reads the source in one REPEATABLE READ, READ ONLY transaction and goes
over the registry tables in copy order (parents first): holes first, then the
new rows in batches (batch.py), then, if it completed, the cut (watermarks.py),
and the safe copy's planner statistics where the copies made them stale
(statistics.py).
"""

import contextlib
import logging
import threading
import time
from collections.abc import Callable, Collection
from datetime import datetime
from typing import Any, NotRequired, Self, TypedDict

import psycopg

from ..errors import TalerOpsError
from ..schema import registry
from . import batch, holes, preflight, statistics, validate, watermarks
from .connections import Connections, open_connections
from .holes import Hole
from .preflight import SafeCopySetup
from .validate import q, qualified

log = logging.getLogger("taler_ops.sync")

DEFAULT_BATCH = 20000
# Serials missing below the watermark (holes) are searched again on every pass
# until the source's stream clock moved this far past the pass that first saw
# them (and every transaction then running ended); a row appearing later halts.
DEFAULT_HOLE_HORIZON = 60.0


class TableResult(TypedDict):
    """One table in one pass."""

    copied: int
    watermark: int
    source_max: int | None
    hole_rows: NotRequired[int]     # of ``copied``: rows that filled holes
    stopped: NotRequired[bool]


class PassResult(TypedDict):
    tables: dict[str, TableResult]
    copied: int
    stopped: bool
    warnings: list[str]
    holes_filled: int
    open_holes: NotRequired[int]    # only after a complete pass
    source_clock: NotRequired[datetime | None]
    analyzed: NotRequired[list[str]]   # tables whose statistics the pass renewed
    seconds: NotRequired[float]


class ProgressEvent(TypedDict):
    """After every batch of new rows (or of a hole's): what the CLI's live line shows."""

    table: str
    rows: int
    watermark: int
    source_max: int | None
    seconds: float
    rows_per_s: float | None


Progress = Callable[[ProgressEvent], None]


class Syncer:
    """One source/destination pair; ``run_pass`` copies one consistent snapshot."""

    def __init__(self, src_uri: str, dst_uri: str, batch_size: int = DEFAULT_BATCH,
                 dry_run: bool = False, progress: Progress | None = None,
                 stop: threading.Event | None = None, tables: Collection[str] | None = None,
                 trigger_free: bool | None = None,
                 hole_horizon: float = DEFAULT_HOLE_HORIZON,
                 keeper: statistics.Keeper | None = None) -> None:
        if batch_size < 1:
            raise TalerOpsError("the batch size (-b) must be at least 1", exit_code=2)
        if hole_horizon < 0:
            raise TalerOpsError("the hole horizon must be >= 0 seconds", exit_code=2)
        self.src_uri, self.dst_uri = src_uri, dst_uri
        self.batch_size = batch_size
        self.dry_run = dry_run
        self.progress: Progress = progress or (lambda event: None)
        self.stop = stop or threading.Event()
        self.entries = [e for e in registry.REPLICATED if tables is None or e.name in tables]
        self.conns: Connections | None = None
        self.setup: SafeCopySetup | None = None
        self.warnings: list[str] = []
        # None: use trigger-free inserts when the destination role may; True: require it.
        self.trigger_free = trigger_free
        self.hole_horizon = hole_horizon
        # Of the current pass (set at its start): what new holes remember.
        self.clock = holes.SourceClock(None, 0, 0)
        self.pass_id = 0
        # The daemon passes its own across reconnections: a warning once per process.
        self.statistics = keeper or statistics.Keeper()

    # -- connections -----------------------------------------------------------
    def open(self) -> Self:
        self.conns = open_connections(self.src_uri, self.dst_uri, self.trigger_free, self.dry_run)
        return self

    def close(self) -> None:
        if self.conns is not None:
            self.conns.close()
        self.conns = None

    def __enter__(self) -> Self:
        return self.open()

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _open_conns(self) -> Connections:
        if self.conns is None:
            raise TalerOpsError("the sync is not connected (Syncer.open)")
        return self.conns

    # -- one pass --------------------------------------------------------------
    def preflight(self) -> None:
        """Patch levels (exit 5), roles, the source's columns and types, hiding places (halt)."""
        self.setup, self.warnings = preflight.check(self._open_conns(), self.entries)

    def run_pass(self) -> PassResult:
        """Copy one snapshot; returns {'tables': {...}, 'copied': n, 'stopped': bool, ...}."""
        self.preflight()
        conns = self._open_conns()
        started = time.monotonic()
        result: PassResult = {"tables": {}, "copied": 0, "stopped": False,
                              "warnings": list(self.warnings), "holes_filled": 0}
        try:
            # A dry run does everything in one destination transaction it rolls back:
            # the checks are the real ones, and nothing stays.
            with conns.dst.transaction(force_rollback=True) if self.dry_run else contextlib.nullcontext():
                self._run_pass(conns, result)
        finally:
            if not conns.src.closed:
                try:
                    conns.src.rollback()
                except psycopg.Error:
                    pass
        if not self.dry_run and not result["stopped"]:
            # After the pass's last commit, outside its snapshot; a stopped pass leaves
            # it to the next one (or autovacuum): stopping must not wait for ANALYZE.
            result["analyzed"] = self.statistics.after_pass(
                conns.dst, {name: info["copied"] for name, info in result["tables"].items()},
                result["warnings"])
        result["seconds"] = round(time.monotonic() - started, 3)
        return result

    def _run_pass(self, conns: Connections, result: PassResult) -> None:
        # Everything below reads the source in this one snapshot (REPEATABLE READ).
        preflight.refuse_source_ahead(conns.src, conns.dst, in_snapshot=True)
        self.clock = holes.source_clock(conns.src)
        maxima = self._source_maxima(conns.src)
        marks = watermarks.read(conns.dst)
        open_holes = holes.read(conns.dst)
        self.pass_id = watermarks.next_pass_id(conns.dst)
        for entry in self.entries:
            if self.stop.is_set():
                result["stopped"] = True
                break
            wm = marks.get(entry.name, 0)
            top = maxima.get(entry.name)
            info: TableResult = {"copied": 0, "watermark": wm, "source_max": top}
            result["tables"][entry.name] = info
            self._revisit_holes(conns, entry, open_holes.get(entry.name, []), info, result)
            if wm and (top is None or top < wm):
                # Rows the safe copy holds are gone upstream: verify tells which.
                self._warn(result, f"{entry.name}: the source's largest serial "
                                   f"({top}) is below the watermark {wm}")
            if top is not None and top > wm:
                self._copy_range(conns, entry, wm, top, info, result)
            if info.get("stopped"):
                result["stopped"] = True
                break
        if not result["stopped"]:
            result["open_holes"] = watermarks.end_pass(
                conns.dst, [e.name for e in self.entries], self.pass_id, self.clock,
                self.hole_horizon)
        result["source_clock"] = self.clock.clock

    def _warn(self, result: PassResult, message: str) -> None:
        log.warning("%s", message)
        result["warnings"].append(message)

    def _source_maxima(self, src: psycopg.Connection[Any]) -> dict[str, int | None]:
        query = " UNION ALL ".join(
            f"SELECT {validate.lit(e.name)}, (SELECT max({q(e.serial)}) FROM {qualified(e.name)})"
            for e in self.entries)
        return dict(src.execute(query).fetchall())

    def _revisit_holes(self, conns: Connections, entry: registry.Entry, table_holes: list[Hole],
                       info: TableResult, result: PassResult) -> None:
        """Copy rows that appeared in open holes; a row in an expired hole halts (late-row)."""
        if not table_holes:
            return
        first = holes.first_rows(conns.src, entry, table_holes)
        for hole in table_holes:
            if hole.lo not in first:
                continue
            if hole.expired:
                raise conns.halt(entry.name, first[hole.lo], validate.LATE_ROW, (
                    f"{entry.name} serial {first[hole.lo]} appeared in the hole "
                    f"{hole.lo}..{hole.hi} (exclusive) after it expired (horizon "
                    f"{self.hole_horizon:g} s of the source's stream clock): the watermark "
                    "went past it long ago; repair the ingres copy, or if the row is genuine "
                    "reopen the hole (docs/sync.md)"))
        for hole in table_holes:
            if hole.lo in first and not hole.expired:
                log.info("event=hole-fill table=%s lo=%d hi=%d", entry.name, hole.lo, hole.hi)
                before = info["copied"]
                self._copy_range(conns, entry, hole.lo, hole.hi - 1, info, result, hole=hole)
                result["holes_filled"] += 1
                info["hole_rows"] = info.get("hole_rows", 0) + info["copied"] - before
                if info.get("stopped"):
                    return

    def _copy_range(self, conns: Connections, entry: registry.Entry, lo: int, top: int,
                    info: TableResult, result: PassResult, hole: Hole | None = None) -> None:
        """Copy the source's rows with lo < serial <= top in batches (a hole's, or new ones)."""
        assert self.setup is not None    # preflight() ran at the start of this pass
        s = q(entry.serial)
        # Only which serials exist is asked of the source; it validates nothing.
        scan = (f"SELECT count(*), max(b.s) FROM (SELECT {s} AS s FROM {qualified(entry.name)} "
                f"WHERE {s} > %(lo)s AND {s} <= %(top)s ORDER BY {s} LIMIT %(n)s) b")
        origin = holes.Origin(self.clock.clock, self.clock.xmax, self.pass_id)
        t0 = time.monotonic()
        while lo < top:
            if self.stop.is_set():
                info["stopped"] = True
                return
            row = conns.src.execute(scan, {"lo": lo, "top": top, "n": self.batch_size}).fetchone()
            assert row is not None      # an aggregate returns its one row
            count, hi = row
            if not count:
                break
            copied = batch.copy_batch(conns, entry, lo, hi, self.setup, origin, hole)
            lo = hi
            info["copied"] += copied
            result["copied"] += copied
            if hole is None:
                info["watermark"] = hi
            elapsed = time.monotonic() - t0
            self.progress({"table": entry.name, "rows": info["copied"],
                           "watermark": info["watermark"], "source_max": info["source_max"],
                           "seconds": elapsed,
                           "rows_per_s": info["copied"] / elapsed if elapsed > 0 else None})
