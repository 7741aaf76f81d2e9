"""The generator: exchange traffic as a bulk history (``bulk``) or live business (``live``).

No real Taler exchange runs here, so this is the exchange's stand-in: the
demo, the sync's and the audit's tests and every benchmark fill exchange
databases with it.  The business rules live in sim/exchange_model.py, planted
misbehaviour in sim/inject.py; this module drives them, transaction by
transaction.

bulk: wallets' lives (sim/lifecycles.py) spread over the 120 days before
``now`` (withdrawals and deposits dominate, every replicated table gets rows),
written with binary COPY in chunks of one transaction each.  Deterministic for
(seed, now_us, the database's existing serials), so two fresh databases get
identical contents.

live: the exchange at work (sim/live.py) at R rows/s in small
transactions: new reserves, withdrawals, deposits, refreshes, refunds and
aggregation, updating current_balance, remaining and done as the exchange
does, with optional GC.
"""

import sys
import time
from collections.abc import Callable, Iterable
from typing import Any, TextIO, TypedDict

import psycopg

from ..crypto.keyring import Keyring
from ..errors import TalerOpsError, UsageError
from ..schema import gc
from .columns import COLUMNS
from .copywriter import CopyWriter
from .exchange_model import Exchange
from .inject import AT_AGGREGATION, AT_END, Injector, parse_kinds, write_record
from .lifecycles import FORCED, Lifecycles, setup_history
from .live import LiveExchange, live_denominations
from .target import (open_exchange, resolve_fk_check, seed_text, use_exchange_search_path,
                     wall_clock_us, write_confirmations)
from .units import DAY, HISTORY_SPAN, HOUR, SECOND, WEEK, YEAR, Rand

CHUNK_ROWS = 25_000
MIN_LIFECYCLE_END = 4 * DAY        # wallets start at least this long before now

# progress(rows per table so far, seconds since the start), after each commit.
Progress = Callable[[dict[str, int], float], None]
# What --inject takes: "a,b", or names (each may hold several, comma-separated).
Kinds = str | Iterable[str] | None


def validate_bulk_args(rows: object, seed: object) -> None:
    if not isinstance(rows, int) or isinstance(rows, bool) or rows <= 0:
        raise UsageError(f"--rows must be a positive integer, not {rows!r}")
    if not isinstance(seed, int) or isinstance(seed, bool):
        raise UsageError(f"--seed must be an integer, not {seed!r}")


def bulk(uri: str, rows: int, seed: int = 0, inject: Kinds = (), record_path: str | None = None,
         now_us: int | None = None, progress: Progress | None = None, fk_check: str = "auto",
         keys: Keyring | None = None, auditor_uri: str | None = None,
         signed: bool = True) -> dict[str, int]:
    """Fill the exchange database with about ``rows`` rows of consistent history.

    Returns {table: rows inserted}; planted misbehaviour goes to ``record_path``.
    ``fk_check`` (schemas with foreign keys): "triggers" has the server check each
    row; "set" checks each chunk with one anti-join per foreign key (see
    CopyWriter; needs superuser); "auto" takes "set" where allowed.
    ``keys``: the crypto.keyring.Keyring that signs (default: the one of ``seed``,
    currency KUDOS); its master public key is what the audit must be configured with.
    ``auditor_uri``: an auditor database to receive the merchants' deposit
    confirmations of every eighth batch deposit (and deposit_confirmation_unknown).
    ``signed=False`` (benchmarks at scale, bench/bench_scale.py): random bytes instead of
    signatures and public keys, about ten times faster; audit such a history without
    the signatures check (no master key), which would report every signature forged.
    """
    validate_bulk_args(rows, seed)
    if fk_check not in ("auto", "triggers", "set"):
        raise UsageError(f"fk_check must be auto, triggers or set, not {fk_check!r}")
    kinds = parse_kinds(inject)         # a usage error before touching the database
    if auditor_uri is None and AT_END & set(kinds):
        raise UsageError("--inject " + ", ".join(sorted(AT_END & set(kinds)))
                         + " writes into the auditor database: give one (generate --auditor)")
    conn, has_fks = open_exchange(uri)
    try:
        return bulk_into(conn, has_fks, rows, seed, inject, record_path, now_us,
                         progress, fk_check, keys, auditor_uri, signed)
    finally:
        conn.close()


def bulk_into(conn: psycopg.Connection[Any], has_fks: bool, rows: int, seed: int = 0,
              inject: Kinds = (), record_path: str | None = None, now_us: int | None = None,
              progress: Progress | None = None, fk_check: str = "auto",
              keys: Keyring | None = None, auditor_uri: str | None = None,
              signed: bool = True) -> dict[str, int]:
    """bulk() on an open connection to any exchange schema with the model's tables.

    Only the tables and columns the model writes are touched (explicit column
    lists), so this works on a database built from Taler's own SQL files too;
    ``has_fks``: whether that schema enforces its foreign keys.  Commits per
    chunk; rolls back the unfinished chunk on error; leaves ``conn`` open.
    """
    validate_bulk_args(rows, seed)
    kinds = parse_kinds(inject)
    now = wall_clock_us() if now_us is None else int(now_us)
    use_exchange_search_path(conn)
    started = time.monotonic()
    writer = None
    try:
        writer = CopyWriter(conn, COLUMNS, fk_check=resolve_fk_check(conn, has_fks, fk_check))
        ex = Exchange(writer, Rand(seed_text(seed, writer)), now,
                      keys if keys is not None else Keyring(seed), signed=signed)
        injector = Injector(kinds) if kinds else None
        ex.forger = injector        # forged signatures: at the first chance, key material included
        if auditor_uri is not None:
            ex.confirmations = []
        t_start = now - HISTORY_SPAN
        setup_history(ex, conn, t_start, merchants=8 + rows // 4000)
        lives = Lifecycles(ex, injector)
        t_last = now - MIN_LIFECYCLE_END
        total = 0

        def report() -> None:
            if progress is not None:
                progress(dict(writer.written), time.monotonic() - started)

        def flush() -> None:
            ex.aggregate()
            writer.flush_behind(report)

        lives.injector = None
        while (total < rows or lives.index < len(FORCED) or lives.carry
               or (injector and set(injector.pending) - AT_AGGREGATION - AT_END
                                 - {"emergency_by_count"})):
            if lives.index > len(FORCED) + rows:
                break               # nothing left to plant into
            frac = min(total / rows, 1.0)
            if injector is not None and frac >= 0.5 and lives.injector is None:
                # Plant in the second half, among ordinary traffic.
                lives.injector = ex.hooks = injector
            lives.run(t_start + int((t_last - t_start) * frac))
            total = sum(writer.added.values()) + len(ex.due) * 6 // 5
            if writer.pending >= CHUNK_ROWS:
                flush()
        flush()
        writer.wait()
        if injector is not None and "emergency_by_count" in injector.pending:
            # Needs the whole history's coins: planted last.
            for coin in injector.at_end(ex, conn, t_last):
                ex.write_coin(coin)
            flush()
            writer.wait()
        if auditor_uri is not None:
            assert ex.confirmations is not None, "kept since auditor_uri is given"
            conn.commit()
            planted = injector.unknown_confirmation(ex) if injector is not None else None
            ids = write_confirmations(auditor_uri, ex.confirmations
                                      + ([planted] if planted else []))
            if injector is not None and planted:
                injector.confirmation_written(ids[-1], planted)
        if injector is not None and injector.pending:
            raise TalerOpsError("could not plant " + ", ".join(injector.pending)
                                + " in a history this small; ask for more --rows")
        inserted = {t: n for t, n in writer.written.items() if n}
        if record_path is not None:
            write_record(record_path, injector.record if injector else [])
        return inserted
    except BaseException:
        try:
            if writer is not None:
                writer.wait()
        except BaseException:
            pass                    # the first error is the one to report
        conn.rollback()
        raise


def validate_live_args(rate: object, duration: object, gc_every: object) -> None:
    for name, value in (("--rate", rate), ("--duration", duration)):
        if isinstance(value, bool) or not isinstance(value, (int, float)) or not value > 0:
            raise UsageError(f"{name} must be a positive number, not {value!r}")
    if gc_every is not None and (isinstance(gc_every, bool)
                                 or not isinstance(gc_every, (int, float)) or not gc_every > 0):
        raise UsageError(f"--gc-every must be a positive number of seconds, not {gc_every!r}")


class LiveStats(TypedDict):
    """What live() returns."""
    transactions: int
    gc_runs: int
    deleted: dict[str, int]             # rows GC deleted, per table
    inserted: dict[str, int]
    updated: dict[str, int]
    setup_rows: int                     # of inserted: key material, fees, merchants
    seconds: float
    rows_per_second: float | None
    injected: list[dict[str, Any]]      # the record of planted misbehaviour


def live(uri: str, rate: float, duration: float, seed: int = 0, gc_every: float | None = None,
         inject: Kinds = (), record_path: str | None = None, progress: Progress | None = None,
         tick: float = 0.2, keys: Keyring | None = None) -> LiveStats:
    """Serve exchange traffic at about ``rate`` rows/s for ``duration`` seconds.

    One transaction per ``tick`` seconds.  Returns {"inserted": {table: n},
    "updated": {table: n}, "deleted": {table: n} (GC), "transactions", "gc_runs",
    "seconds", "rows_per_second", "injected": [...]}.
    """
    validate_live_args(rate, duration, gc_every)
    kinds = parse_kinds(inject)
    conn, _ = open_exchange(uri, need_primary_for_gc=gc_every is not None)
    try:
        writer = CopyWriter(conn, COLUMNS)
        start_wall = wall_clock_us()
        end_wall = start_wall + int(duration * SECOND)
        ex = Exchange(writer, Rand(seed_text(seed, writer)), start_wall,
                      keys if keys is not None else Keyring(seed))
        ex.load_fees(conn)
        ex.ensure_fees(start_wall - DAY, end_wall + YEAR)
        live_denominations(ex, conn, start_wall, end_wall + WEEK)
        for _ in range(4):
            ex.new_merchant(start_wall - HOUR)
        state = LiveExchange(conn, ex, gc_every, end_wall)
        writer.flush()
        conn.commit()
        setup_rows = sum(writer.written.values())
        injector = Injector(kinds) if kinds else None
        ex.forger = injector
        transactions, gc_runs = 1, 0
        deleted: dict[str, int] = {}
        updated: dict[str, int] = {}
        started = time.monotonic()
        next_gc = started + gc_every if gc_every else None
        inserted = 0
        t = 0
        while True:
            elapsed = time.monotonic() - started
            if elapsed >= duration:
                break
            # Never behind the last tick's timestamps: a busy tick hands out more
            # microseconds than the wall clock moves (history_requests' key holds one).
            t = max(wall_clock_us(), t)
            target = rate * min(elapsed + tick, duration)
            while inserted + writer.pending < target:
                state.step(t)
                t += 1          # distinct timestamps: several keys include one
            if injector is not None and injector.pending and elapsed >= duration / 2:
                state.inject(injector, t)
            state.aggregate(t)
            inserted += writer.pending
            writer.flush()
            for table, n in state.write_updates().items():
                updated[table] = updated.get(table, 0) + n
            conn.commit()
            transactions += 1
            if gc_every and next_gc is not None and time.monotonic() >= next_gc:
                result = gc.collect(conn, now_us=wall_clock_us())
                conn.commit()
                gc_runs += 1
                for table, n in result["deleted"].items():
                    deleted[table] = deleted.get(table, 0) + n
                next_gc = time.monotonic() + gc_every
            if progress is not None:
                progress(writer.counts(), time.monotonic() - started)
            pause = started + (transactions - 1) * tick - time.monotonic()
            if pause > 0:
                time.sleep(min(pause, max(duration - (time.monotonic() - started), 0)))
        # The aggregator's last round, executed now (never in the future: an audit
        # started right after the run must not see transfers dated after its clock).
        if injector is not None and injector.pending:
            state.inject(injector, wall_clock_us())
        state.aggregate(wall_clock_us())
        writer.flush()
        for table, n in state.write_updates().items():
            updated[table] = updated.get(table, 0) + n
        conn.commit()
        seconds = time.monotonic() - started
        written = {t: n for t, n in writer.written.items() if n}
        total = sum(written.values()) - setup_rows
        stats: LiveStats = {
            "transactions": transactions, "gc_runs": gc_runs, "deleted": deleted,
            "inserted": written, "updated": updated, "setup_rows": setup_rows,
            "seconds": round(seconds, 3),
            "rows_per_second": round(total / seconds, 1) if seconds else None,
            "injected": injector.record if injector else []}
        if injector is not None and injector.pending:
            raise TalerOpsError("could not plant " + ", ".join(injector.pending)
                                + " during so short a run; use a longer --duration")
        if record_path is not None:
            write_record(record_path, stats["injected"])
        return stats
    except BaseException:
        conn.rollback()
        raise
    finally:
        conn.close()


class TtyProgress:
    """A progress callback that redraws one status line on a terminal; ``done()``
    ends the line."""

    def __init__(self, stream: TextIO):
        self.stream = stream
        self.last = 0.0

    def __call__(self, counts: dict[str, int], elapsed: float) -> None:
        now = time.monotonic()
        if now - self.last < 0.2:
            return
        self.last = now
        total = sum(counts.values())
        top = sorted(((n, t) for t, n in counts.items() if n), reverse=True)[:4]
        line = (f"rows {total:,}  {total / elapsed if elapsed else 0:,.0f} rows/s  "
                + "  ".join(f"{t} {n:,}" for n, t in top))
        self.stream.write("\r\x1b[K" + line[:200])
        self.stream.flush()

    def done(self) -> None:
        self.stream.write("\n")
        self.stream.flush()


def tty_progress(stream: TextIO | None = None) -> TtyProgress | None:
    """A progress callback that redraws one status line on a terminal, else None."""
    stream = stream or sys.stderr
    if not stream.isatty():
        return None
    return TtyProgress(stream)
