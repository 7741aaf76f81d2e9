"""Running passes: ``sync_once`` (``-t``, the Ansible module) and ``run_daemon`` (the service).

Both reconnect after a lost connection or a transient error; a halt, a schema
problem or a configuration error ends them.
"""

import logging
import threading
import time
from collections.abc import Callable
from typing import TypedDict

import psycopg

from ..errors import TalerOpsError
from .failures import ConnectionLost, connection_problem, one_line
from .statistics import Keeper
from .syncer import DEFAULT_BATCH, DEFAULT_HOLE_HORIZON, PassResult, Progress, Syncer
from .wakeup import WakeHints

log = logging.getLogger("taler_ops.sync")

MAX_IDLE_DELAY = 5.0        # seconds between passes when idle (daemon)
MAX_BACKOFF = 60.0          # seconds between reconnection attempts
HINT_GAP = 0.1   # seconds: after hinted passes that found nothing, hints wait at least this long


class TableTotals(TypedDict):
    copied: int
    watermark: int
    source_max: int | None


class SyncTotals(TypedDict):
    """What ``sync_once`` returns (the CLI's --json, the Ansible module's result)."""

    tables: dict[str, TableTotals]
    copied: int
    passes: int
    dry_run: bool
    warnings: list[str]
    open_holes: int | None
    holes_filled: int
    stopped: bool
    analyzed: list[str]         # tables whose planner statistics the run renewed


class DaemonTotals(TypedDict):
    passes: int
    copied: int
    hints: int


def sync_once(src_uri: str, dst_uri: str, batch_size: int = DEFAULT_BATCH, dry_run: bool = False,
              progress: Progress | None = None, stop: threading.Event | None = None,
              retries: int = 3, trigger_free: bool | None = None,
              hole_horizon: float = DEFAULT_HOLE_HORIZON) -> SyncTotals:
    """Passes until one copies nothing (``-t``); a dry run makes exactly one pass.

    Serials still missing below a watermark stay recorded as open holes in the
    safe copy (``open_holes`` in the result), so a row committed late is copied
    by any later run, -t or daemon: exiting 0 never steps over a row.
    A connection lost (or a transient error) in the middle is retried ``retries``
    times with backoff; a database unreachable at the start fails at once.
    """
    totals: SyncTotals = {"tables": {}, "copied": 0, "passes": 0, "dry_run": dry_run,
                          "warnings": [], "open_holes": None, "holes_filled": 0, "stopped": False,
                          "analyzed": []}
    syncer = Syncer(src_uri, dst_uri, batch_size, dry_run, progress, stop,
                    trigger_free=trigger_free, hole_horizon=hole_horizon).open()
    backoff = 1.0
    try:
        while True:
            try:
                result = _guarded_pass(syncer)
            except ConnectionLost as exc:
                if retries <= 0:
                    raise
                retries -= 1
                log.warning("event=reconnect delay=%.1fs reason=%s", backoff, exc)
                syncer.close()
                time.sleep(backoff)
                backoff *= 2
                syncer.open()
                continue
            totals["passes"] += 1
            totals["copied"] += result["copied"]
            # Distinct, in order: a pass repeats the preflight's, the statistics' come once.
            totals["warnings"] += [w for w in result["warnings"] if w not in totals["warnings"]]
            totals["open_holes"] = result.get("open_holes", totals["open_holes"])
            totals["holes_filled"] += result["holes_filled"]
            totals["analyzed"] += [t for t in result.get("analyzed", [])
                                   if t not in totals["analyzed"]]
            for name, info in result["tables"].items():
                agg = totals["tables"].setdefault(name, {"copied": 0, "watermark": 0,
                                                         "source_max": None})
                agg["copied"] += info["copied"]
                agg["watermark"] = info["watermark"]
                agg["source_max"] = info["source_max"]
            if dry_run or result["copied"] == 0 or result["stopped"]:
                totals["stopped"] = result["stopped"]
                return totals
    finally:
        syncer.close()


def _guarded_pass(syncer: Syncer) -> PassResult:
    """One pass; a database error becomes ConnectionLost (retried) or a plain failure."""
    try:
        return syncer.run_pass()
    except psycopg.Error as exc:
        if connection_problem(exc):
            raise ConnectionLost(f"lost a database connection: {one_line(exc)}") from None
        raise TalerOpsError(f"sync pass failed: {one_line(exc)}") from None


def run_daemon(src_uri: str, dst_uri: str, batch_size: int = DEFAULT_BATCH,
               progress: Progress | None = None, stop: threading.Event | None = None,
               on_pass: Callable[[PassResult], None] | None = None,
               max_delay: float = MAX_IDLE_DELAY, hole_horizon: float = DEFAULT_HOLE_HORIZON,
               wakeup: bool = True) -> DaemonTotals:
    """Keep the safe copy fresh until ``stop`` is set; halts and schema problems end it.

    Between passes it waits adaptively: not at all after a full batch, 0.05 s
    after a pass that copied something, doubling up to ``max_delay`` while idle
    (polling).  With ``wakeup`` it also LISTENs on the ingres (WakeHints), and
    while it listens an idle wait is ``max_delay`` at once: the
    ingres' wake-up trigger (an ENABLE ALWAYS row trigger, which the apply
    worker fires; statement triggers it does not) NOTIFYs per applied
    transaction, and a hint ends the wait at once.  The hint is untrusted: a
    flood of them only makes passes (which find nothing) more frequent, at most
    one per HINT_GAP after two empty passes hints started; missing hints leave polling.
    Lost connections and transient errors are retried with exponential backoff
    up to MAX_BACKOFF.  ``hole_horizon``: see DEFAULT_HOLE_HORIZON and
    holes.source_clock.
    """
    stop = stop or threading.Event()
    delay, backoff = 0.0, 1.0
    syncer = None
    hints = WakeHints(src_uri, stop) if wakeup else None
    woken = False
    futile = 0
    passes = copied = 0
    keeper = Keeper()
    try:
        while not stop.is_set():
            try:
                if syncer is None:
                    syncer = Syncer(src_uri, dst_uri, batch_size, progress=progress,
                                    stop=stop, hole_horizon=hole_horizon, keeper=keeper).open()
                    log.info("event=connected")
                if hints is not None:
                    hints.pending()     # hints up to now are answered by this pass
                result = _guarded_pass(syncer)
            except ConnectionLost as exc:
                if syncer is not None:
                    syncer.close()
                    syncer = None
                log.warning("event=reconnect delay=%.1fs reason=%s", backoff, exc)
                stop.wait(backoff)
                backoff = min(MAX_BACKOFF, backoff * 2)
                continue
            backoff = 1.0
            passes += 1
            copied += result["copied"]
            if on_pass:
                on_pass(result)
            if result["copied"] >= batch_size:
                delay = 0.0
            elif result["copied"]:
                delay = 0.05
            elif hints is not None and hints.live():
                delay = max_delay   # hints wake it; polling is only the fallback
            else:
                delay = min(max_delay, max(0.1, delay * 2))
            if hints is None:
                stop.wait(delay)
            elif delay > 0:
                # Hints that lead to nothing twice in a row: slow a flood down.
                futile = futile + 1 if woken and not result["copied"] else 0
                if futile >= 2:
                    stop.wait(HINT_GAP)
                woken = hints.pending() or hints.wait(delay)
            else:
                woken = False
    finally:
        if syncer is not None:
            syncer.close()
        if hints is not None:
            hints.close()
    return {"passes": passes, "copied": copied,
            "hints": hints.hints if hints is not None else 0}
