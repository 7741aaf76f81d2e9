"""The safe sync: copy new, valid, append-only records from ingres to the safe copy.

Nothing on the source (the untrusted ingres copy) is trusted: it only streams
stored column values; every rule deciding whether a row may enter the safe copy
runs on the destination.  One *pass* reads the source in one REPEATABLE READ,
READ ONLY transaction (a hot standby works as a source, and everything a pass
copies comes from one snapshot).  For every registry table in copy order:

1. *holes* (serials found missing below the watermark by an earlier pass, see
   ``taler_ops.sync_holes``) are searched again; rows that appeared there are
   copied like new rows; a row in an *expired* hole halts (``late-row``);
2. the rows ``watermark < serial <= max(serial)`` are copied in batches of at
   most ``batch_size``: binary COPY from the source straight into the
   destination table inside the batch transaction, never decoded in Python;
3. before commit, on the destination: the rows must be exactly the asked-for
   range, the row rules (validate.row_check: derived hashes, NULLs, lengths,
   amounts, CHECKs) and relation rules the destination does not enforce itself
   must hold; the serials missing in the batch become holes;
4. the batch, its holes and the watermark commit in one transaction, so a crash
   at any point neither duplicates nor skips.

At the end of a complete pass, holes whose horizon passed expire, the pass's
cut is recorded, and ``complete_serial`` moves to the newest cut that no open
or since-filled hole makes inconsistent (``_end_pass``).

Any violation halts: the batch is rolled back, the first offending serial and
rule are diagnosed on the destination (the batch streamed again, in the same
snapshot, into an unconstrained temporary table), recorded in
``taler_ops.sync_halts`` in a transaction of their own, and SyncHalt is raised.
UPDATEs and DELETEs upstream are never propagated (sync/verify.py reports them).
"""

import contextlib
import logging
import re
import threading
import time
from typing import NamedTuple

import psycopg
from psycopg import IsolationLevel
from psycopg.types.json import Jsonb

from ..schema import bookkeeping, exchange_schema, registry, state, versioning
from . import validate
from .. import locks
from ..db import close_quietly, connect
from ..errors import ConfigError, DatabaseNotReady, TalerOpsError
from .validate import q, qualified

log = logging.getLogger("taler_ops.sync")

DEFAULT_BATCH = 20000
CHUNK_BYTES = 1 << 17        # bytes handed to libpq per write while streaming
MAX_IDLE_DELAY = 5.0        # seconds between passes when idle (daemon)
# Serials missing below the watermark (holes) are searched again on every pass
# until the source's stream clock moved this far past the pass that first saw
# them (and every transaction then running ended); a row appearing later halts.
DEFAULT_HOLE_HORIZON = 60.0
MAX_BACKOFF = 60.0          # seconds between reconnection attempts
# Both flavours' patches: Taler's own (exchange-NNNN) and the built-in model's.
PATCH_PREFIXES = ("exchange-", exchange_schema.PATCH_PREFIX)
SOURCE_WHAT = "sync source (ingres) database"
DEST_WHAT = "sync destination (safe copy) database"


_CONTROL = re.compile(r"[\x00-\x1f\x7f-\x9f]")
MAX_DETAIL = 400


def _printable(text):
    """Details quote untrusted ingres values: keep the HALT message one plain line."""
    text = _CONTROL.sub(lambda m: f"\\x{ord(m.group()):02x}", str(text))
    return text if len(text) <= MAX_DETAIL else text[:MAX_DETAIL] + "..."


class SyncHalt(TalerOpsError):
    """An invariant violation: the sync stopped without writing the offending batch."""

    def __init__(self, table, serial, rule, detail):
        detail = _printable(detail)
        self.table, self.serial, self.rule, self.detail = table, serial, rule, detail
        super().__init__(f"HALT table={table} serial={'-' if serial is None else serial} "
                         f"rule={rule} {detail}")

    def as_dict(self):
        return {"table": self.table, "serial": self.serial, "rule": self.rule,
                "detail": self.detail, "message": str(self)}


class SyncLocked(TalerOpsError):
    """Another sync holds the destination."""


class ConnectionLost(TalerOpsError):
    """A server went away; the daemon reconnects, a -t run fails with exit 5."""

    exit_code = DatabaseNotReady.exit_code


def _level(patches):
    return patches[-1] if patches else "no patch"


def _one_line(exc):
    return " ".join(str(exc).split())


# Worth another pass: a hot-standby source cancels queries that conflict with
# recovery, and serialization failures or deadlocks clear up on a retry.
_TRANSIENT = (psycopg.errors.SerializationFailure, psycopg.errors.DeadlockDetected,
              psycopg.errors.QueryCanceled, psycopg.errors.AdminShutdown,
              psycopg.errors.CannotConnectNow)


def _connection_problem(exc):
    return isinstance(exc, _TRANSIENT) or (
        isinstance(exc, (psycopg.OperationalError, psycopg.InterfaceError))
        and not isinstance(exc, psycopg.errors.QueryCanceled))


class Hole(NamedTuple):
    """Serials lo < s < hi a pass found missing below the watermark."""

    lo: int
    hi: int
    expired: bool
    source_clock: object
    source_xmax: int
    pass_id: int
    seen_tsz: object


def _nothing():
    return contextlib.nullcontext()


class Syncer:
    """One source/destination pair; ``run_pass`` copies one consistent snapshot."""

    def __init__(self, src_uri, dst_uri, batch_size=DEFAULT_BATCH, dry_run=False,
                 progress=None, stop=None, tables=None, trigger_free=None,
                 hole_horizon=DEFAULT_HOLE_HORIZON):
        if batch_size < 1:
            raise TalerOpsError("the batch size (-b) must be at least 1", exit_code=2)
        if hole_horizon < 0:
            raise TalerOpsError("the hole horizon must be >= 0 seconds", exit_code=2)
        self.src_uri, self.dst_uri = src_uri, dst_uri
        self.batch_size = batch_size
        self.dry_run = dry_run
        self.progress = progress or (lambda event: None)
        self.stop = stop or threading.Event()
        self.entries = [e for e in registry.REPLICATED if tables is None or e.name in tables]
        self.src = self.dst = None
        self.dst_setup = None
        self.warnings = []
        # None: use trigger-free inserts when the destination role may; True: require it.
        self.trigger_free = trigger_free
        self.replica_role = False
        self.hole_horizon = hole_horizon
        self.clock = None      # the source's stream clock of the current pass
        self.pass_id = 0

    # -- connections -----------------------------------------------------------
    def open(self):
        try:
            self.src = connect(self.src_uri, SOURCE_WHAT, autocommit=True)
            self.dst = connect(self.dst_uri, DEST_WHAT, autocommit=True)
        except DatabaseNotReady as exc:
            self.close()
            raise ConnectionLost(str(exc)) from None
        for conn in (self.src, self.dst):
            # format_type() then names exchange.taler_amount in full, and nothing an
            # untrusted source adds to its schemas can shadow the functions we call.
            conn.execute("SET search_path TO pg_catalog, pg_temp")
            conn.execute("SET bytea_output TO hex")
        # A query that row-level security would filter now fails instead of
        # silently returning fewer rows (the ingres owner may define policies).
        self.src.execute("SET row_security TO off")
        # A dry run takes the lock too: it inserts (then rolls back) the same rows, and
        # racing a running sync would end in a false duplicate-key halt.
        if not locks.try_hold(self.dst, locks.SYNC):
            self.close()
            raise SyncLocked("another taler-ops sync is already running against this "
                             "safe copy (advisory lock held); exiting")
        # A safe copy built from Taler's own SQL carries Taler's triggers (history
        # tables, purse decisions): they are the exchange's business logic, not
        # checks, and must not run again on copied rows.
        required = bool(self.trigger_free) or state.exchange_flavour(self.dst) == "taler"
        if required and self.trigger_free is False:
            self.close()
            raise ConfigError("the safe copy was built from Taler's SQL files: its triggers must "
                              "not fire on copied rows, so the sync cannot run with them on")
        self.replica_role = False
        if self.trigger_free is not False:
            self.replica_role = self._try_replica_role(required)
        self.src.autocommit = False
        self.src.isolation_level = IsolationLevel.REPEATABLE_READ
        self.src.read_only = True
        return self

    def _try_replica_role(self, required):
        """Skip the FK triggers if allowed: the sync then checks parents set-based itself.

        A per-row RI trigger costs about as much as the insert it checks (and
        locks the parent row); one anti-join per batch and FK is far cheaper.
        Needs superuser or, on PostgreSQL >= 15,
        ``GRANT SET ON PARAMETER session_replication_role TO <sync role>``.
        ``required``: refuse to run without it (exit 6) instead of going on with triggers.
        """
        try:
            self.dst.execute("SET session_replication_role = replica")
            return True
        except psycopg.errors.InsufficientPrivilege:
            if required:
                self.close()
                raise ConfigError("the destination role may not SET session_replication_role "
                                  "(GRANT SET ON PARAMETER session_replication_role TO it); a "
                                  "safe copy built from Taler's SQL files needs it") from None
            return False

    def close(self):
        close_quietly(self.src)
        close_quietly(self.dst)
        self.src = self.dst = None

    def __enter__(self):
        return self.open()

    def __exit__(self, *exc):
        self.close()

    # -- preflight -------------------------------------------------------------
    def preflight(self):
        """Patch levels (exit 5), roles, the source's columns and types, hiding places (halt)."""
        flavours = {side: state.exchange_flavour(conn)
                    for side, conn in (("ingres", self.src), ("safe copy", self.dst))}
        self.src.rollback()
        if flavours["ingres"] != flavours["safe copy"]:
            # The tables are the same, but patch levels could not be compared.
            raise DatabaseNotReady(
                f"ingres is a {flavours['ingres']} schema and the safe copy a "
                f"{flavours['safe copy']} one (taler: built from Taler's SQL files; model: "
                "taler-ops' built-in model): create both the same way; nothing was copied")
        self._refuse_source_ahead()
        state.assert_exchange_current(self.src, SOURCE_WHAT)
        state.assert_exchange_current(self.dst, DEST_WHAT)
        self.src.rollback()
        src_setup = bookkeeping.read_setup(self.src)
        self.src.rollback()
        dst_setup = bookkeeping.read_setup(self.dst)
        if dst_setup is None or dst_setup[0] != "safe-copy":
            raise ConfigError(
                f"the destination database was created as {dst_setup and dst_setup[0]!r}, not "
                "'safe-copy': refusing to sync into it (create it with exchange-dbinit --role "
                "safe-copy)")
        if src_setup is not None and src_setup[0] == "safe-copy":
            raise ConfigError("the source database is itself a 'safe-copy': the sync reads the "
                              "ingres copy (or the primary), refusing")
        self.dst_setup = dst_setup
        self.warnings = []
        for side, conn in (("source", self.src), ("destination", self.dst)):
            problems, extras = schema_problems(conn, self.entries, destination=conn is self.dst)
            if conn is self.src:
                conn.rollback()
            for table, message in extras:
                self.warnings.append(f"{side} table {table}: {message} (not copied)")
                log.warning("%s table %s: %s (not copied)", side, table, message)
            if problems:
                table, message = problems[0]
                raise self._halt(table, None, validate.SCHEMA_DRIFT, f"{side}: {message}")
        hiding = hiding_places(self.src, self.entries)
        self.src.rollback()
        if hiding:
            table, message = hiding[0]
            raise self._halt(table, None, validate.HIDDEN_ROWS, message)

    def _refuse_source_ahead(self, in_snapshot=False):
        """A schema the safe copy does not have yet arrived on ingres: exit 5, write nothing.

        With streaming replication the ingres standby follows the primary's
        schema by itself, so after an exchange upgrade it is ahead of the safe
        copy until the upgrade playbook has migrated the safe copy too.
        ``in_snapshot``: read ingres in the pass's snapshot (kept open), so a
        patch and rows committed together are never split between the check
        and the copy.
        """
        have = {}
        for side, conn in (("ingres", self.src), ("safe copy", self.dst)):
            have[side] = [p for prefix in PATCH_PREFIXES for p in versioning.applied(conn, prefix)]
            if conn is self.src and not in_snapshot:
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

    # -- one pass --------------------------------------------------------------
    def run_pass(self):
        """Copy one snapshot; returns {'tables': {...}, 'copied': n, 'stopped': bool}."""
        self.preflight()
        started = time.monotonic()
        result = {"tables": {}, "copied": 0, "stopped": False, "warnings": list(self.warnings),
                  "holes_filled": 0}
        try:
            # A dry run does everything in one destination transaction it rolls back:
            # the checks are the real ones, and nothing stays.
            with self.dst.transaction(force_rollback=True) if self.dry_run else _nothing():
                self._run_pass(result)
        finally:
            if self.src is not None and not self.src.closed:
                try:
                    self.src.rollback()
                except psycopg.Error:
                    pass
        result["seconds"] = round(time.monotonic() - started, 3)
        return result

    def _run_pass(self, result):
        # Everything below reads the source in this one snapshot (REPEATABLE READ).
        self._refuse_source_ahead(in_snapshot=True)
        self.clock = self._source_clock()
        maxima = self._source_maxima()
        marks = self._watermarks()
        holes = self._holes()
        self.pass_id = self._next_pass_id()
        for entry in self.entries:
            if self.stop.is_set():
                result["stopped"] = True
                break
            wm = marks.get(entry.name, 0)
            top = maxima.get(entry.name)
            info = {"copied": 0, "watermark": wm, "source_max": top}
            result["tables"][entry.name] = info
            self._revisit_holes(entry, holes.get(entry.name, []), info, result)
            if wm and (top is None or top < wm):
                # Rows the safe copy holds are gone upstream: verify tells which.
                self._warn(result, f"{entry.name}: the source's largest serial "
                                   f"({top}) is below the watermark {wm}")
            if top is not None and top > wm:
                self._copy_range(entry, wm, top, info, result)
            if info.get("stopped"):
                result["stopped"] = True
                break
        if not result["stopped"]:
            result["open_holes"] = self._end_pass()
        result["source_clock"] = self.clock[0]

    def _end_pass(self):
        """Expire holes past their horizon, record this pass's cut, publish a consistent one.

        Every open hole was searched in this pass's snapshot (or made in it) and
        found empty, so expiring it here is judged on this one snapshot.
        """
        names = [e.name for e in self.entries]
        clock, xmin, _ = self.clock
        with self.dst.transaction():
            if clock is not None:
                # Holes seen while the stream clock was unknown start their horizon now.
                self.dst.execute(
                    f"UPDATE {bookkeeping.HOLES} SET source_clock = %s "
                    "WHERE source_clock IS NULL AND expired_tsz IS NULL", (clock,))
                self.dst.execute(
                    f"UPDATE {bookkeeping.HOLES} SET expired_tsz = now() "
                    "WHERE expired_tsz IS NULL AND table_name = ANY(%s) "
                    "AND source_clock + make_interval(secs => %s) <= %s AND source_xmax <= %s",
                    (names, self.hole_horizon, clock, xmin))
            self.dst.execute(
                f"INSERT INTO {bookkeeping.WATERMARKS} (table_name) SELECT unnest(%s::text[]) "
                "ON CONFLICT (table_name) DO NOTHING", (names,))
            self.dst.execute(
                f"INSERT INTO {bookkeeping.CUTS} (pass_id, cut) SELECT %s, "
                f"jsonb_object_agg(table_name, last_serial) FROM {bookkeeping.WATERMARKS} "
                "WHERE table_name = ANY(%s) ON CONFLICT (pass_id) DO NOTHING",
                (self.pass_id, names))
            # The newest cut no open hole is older than, and no hole open then was filled.
            row = self.dst.execute(
                f"SELECT c.pass_id, c.cut FROM {bookkeeping.CUTS} c WHERE NOT c.spoiled "
                f"AND NOT EXISTS (SELECT 1 FROM {bookkeeping.HOLES} h WHERE h.expired_tsz IS NULL"
                " AND h.pass_id <= c.pass_id AND h.table_name = ANY(%s)) "
                "ORDER BY c.pass_id DESC LIMIT 1", (names,)).fetchone()
            if row is not None:
                pass_id, cut = row
                self.dst.execute(
                    f"UPDATE {bookkeeping.WATERMARKS} w SET complete_serial = (%s::jsonb ->> "
                    "w.table_name)::int8 WHERE w.table_name = ANY(%s) AND %s::jsonb ? w.table_name"
                    " AND complete_serial IS DISTINCT FROM (%s::jsonb ->> w.table_name)::int8",
                    (Jsonb(cut), names, Jsonb(cut), Jsonb(cut)))
                self.dst.execute(f"DELETE FROM {bookkeeping.CUTS} WHERE pass_id < %s", (pass_id,))
            # A spoiled cut can never be published again.
            self.dst.execute(f"DELETE FROM {bookkeeping.CUTS} WHERE spoiled")
            return self.dst.execute(
                f"SELECT count(*) FROM {bookkeeping.HOLES} WHERE expired_tsz IS NULL").fetchone()[0]

    def _warn(self, result, message):
        log.warning("%s", message)
        result["warnings"].append(message)

    def _source_clock(self):
        """(clock, xmin, xmax) of the source in the pass's snapshot: the holes' horizon.

        The clock is the one the replication stream carries, so a stalled stream
        stops it and no hole expires while rows cannot arrive: on a hot standby
        the primary's commit time of the last replayed transaction, on a logical
        subscriber the publisher's send time of the last message (the slowest
        subscription), otherwise (a primary) its own time.  xmin/xmax: a hole
        only expires once every transaction running when it was seen has ended.
        The ingres owner can move this clock; then a late row halts (late-row).
        """
        row = self.src.execute(
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
        recovery, replayed, now, xmin, xmax, subscriptions, sent = row
        if recovery:
            clock = replayed
        elif subscriptions:
            clock = sent
        else:
            clock = now
        return clock, xmin, xmax

    def _source_maxima(self):
        query = " UNION ALL ".join(
            f"SELECT {validate.lit(e.name)}, (SELECT max({q(e.serial)}) FROM {qualified(e.name)})"
            for e in self.entries)
        return dict(self.src.execute(query).fetchall())

    def _watermarks(self):
        rows = self.dst.execute(
            f"SELECT table_name, last_serial FROM {bookkeeping.WATERMARKS}").fetchall()
        return dict(rows)

    def _holes(self):
        out = {}
        for row in self.dst.execute(
                f"SELECT table_name, lo, hi, expired_tsz IS NOT NULL, source_clock, source_xmax, "
                f"pass_id, seen_tsz FROM {bookkeeping.HOLES} ORDER BY table_name, lo"):
            out.setdefault(row[0], []).append(Hole(*row[1:]))
        return out

    def _next_pass_id(self):
        # Above every cut and every hole, even when old cuts were pruned: a new cut
        # must never look older than a hole that was open before it.
        return self.dst.execute(
            f"SELECT greatest((SELECT max(pass_id) FROM {bookkeeping.CUTS}), "
            f"(SELECT max(pass_id) FROM {bookkeeping.HOLES}), 0) + 1").fetchone()[0]

    # -- holes -----------------------------------------------------------------
    def _revisit_holes(self, entry, holes, info, result):
        """Copy rows that appeared in open holes; a row in an expired hole halts (late-row)."""
        if not holes:
            return
        s = q(entry.serial)
        # Only stored serials are read here: which holes hold a row now, and the first.
        filled = self.src.execute(
            f"SELECT h.lo, (SELECT min(t.{s}) FROM {qualified(entry.name)} t "
            f"WHERE t.{s} > h.lo AND t.{s} < h.hi) FROM unnest(%s::int8[], %s::int8[]) h(lo, hi)",
            ([h.lo for h in holes], [h.hi for h in holes])).fetchall()
        first = {lo: serial for lo, serial in filled if serial is not None}
        for hole in holes:
            if hole.lo not in first:
                continue
            if hole.expired:
                raise self._halt(entry.name, first[hole.lo], validate.LATE_ROW, (
                    f"{entry.name} serial {first[hole.lo]} appeared in the hole "
                    f"{hole.lo}..{hole.hi} (exclusive) after it expired (horizon "
                    f"{self.hole_horizon:g} s of the source's stream clock): the watermark "
                    "went past it long ago; repair the ingres copy, or if the row is genuine "
                    "reopen the hole (docs/sync.md)"))
        for hole in holes:
            if hole.lo in first and not hole.expired:
                log.info("event=hole-fill table=%s lo=%d hi=%d", entry.name, hole.lo, hole.hi)
                before = info["copied"]
                self._copy_range(entry, hole.lo, hole.hi - 1, info, result, hole=hole)
                result["holes_filled"] += 1
                info["hole_rows"] = info.get("hole_rows", 0) + info["copied"] - before
                if info.get("stopped"):
                    return

    # -- copying ---------------------------------------------------------------
    def _copy_range(self, entry, lo, top, info, result, hole=None):
        """Copy the source's rows with lo < serial <= top in batches (a hole's, or new ones)."""
        s = q(entry.serial)
        # Only which serials exist is asked of the source; it validates nothing.
        scan = (f"SELECT count(*), max(b.s) FROM (SELECT {s} AS s FROM {qualified(entry.name)} "
                f"WHERE {s} > %(lo)s AND {s} <= %(top)s ORDER BY {s} LIMIT %(n)s) b")
        t0 = time.monotonic()
        while lo < top:
            if self.stop.is_set():
                info["stopped"] = True
                return
            count, hi = self.src.execute(
                scan, {"lo": lo, "top": top, "n": self.batch_size}).fetchone()
            if not count:
                break
            copied = self._copy_batch(entry, lo, hi, hole)
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

    def _copy_out_sql(self, entry, lo, hi):
        s = q(entry.serial)
        return (f"COPY (SELECT {validate.copy_select_list(entry)} FROM {qualified(entry.name)} "
                f"WHERE {s} > {int(lo)} AND {s} <= {int(hi)} ORDER BY {s}) "
                "TO STDOUT (FORMAT BINARY)")

    def _stream(self, entry, lo, hi, target):
        """Stream (lo, hi] from the source into ``target`` inside the current dst transaction.

        Returns the number of rows the destination took.  The source COPY is
        always read to its end, even when the destination fails, so the source
        transaction (and its snapshot) survives for the diagnosis.
        """
        copy_in = f"COPY {target} ({validate.column_list(entry)}) FROM STDIN (FORMAT BINARY)"
        failure = None
        with self.dst.cursor() as dcur, self.src.cursor() as scur:
            with dcur.copy(copy_in) as sink:
                with scur.copy(self._copy_out_sql(entry, lo, hi)) as source:
                    # The source sends one message per row; hand them on in bigger
                    # chunks to save a libpq round of calls per row.
                    chunk = bytearray()
                    for block in source:
                        chunk += block
                        if len(chunk) >= CHUNK_BYTES:
                            failure = failure or self._put(sink, chunk)
                            chunk = bytearray()
                    if chunk:
                        failure = failure or self._put(sink, chunk)
                if failure is not None:
                    raise failure
            return dcur.rowcount

    def _probe_by_index(self):
        """Checks probe a batch's rows into big tables: never scan the big table.

        A table that just grew from nothing has stale statistics, and a hash
        anti-join would then read the whole parent table for every batch.
        """
        for setting in ("enable_seqscan", "enable_hashjoin", "enable_mergejoin"):
            self.dst.execute(f"SET LOCAL {setting} = off")

    @staticmethod
    def _put(sink, data):
        try:
            sink.write(data)
        except psycopg.Error as exc:
            return exc
        return None

    def _copy_batch(self, entry, lo, hi, hole=None):
        """One destination transaction: rows (lo, hi], their checks, holes and watermark.

        ``hole``: the rows fill (part of) this hole instead of moving the watermark.
        """
        partitions = self.dst_setup[1]
        foreign_keys = self.dst_setup[2] and not self.replica_role
        enforced = validate.globally_enforced_keys(entry, partitions)
        target = qualified(entry.name)
        checks = validate.relation_checks(entry, target, target,
                                          enforced_keys=enforced, foreign_keys=foreign_keys)
        violation = None
        params = {"lo": lo, "hi": hi}
        try:
            with self.dst.transaction():
                copied = self._stream(entry, lo, hi, target)
                violation = self._range_violation(entry, lo, hi, copied)
                if violation is None:
                    row = self.dst.execute(validate.row_check(entry, target), params).fetchone()
                    if row:
                        violation = self._row_violation(entry, *row)
                if violation is None and checks:
                    self._probe_by_index()
                    for rule, query in checks:
                        row = self.dst.execute(query, params).fetchone()
                        if row:
                            violation = (entry.name, row[0], rule, f"{entry.name} {row[1]}")
                            break
                if violation is not None:
                    raise psycopg.Rollback()
                self._record_holes(entry, lo, hi, hole)
                if hole is None:
                    self.dst.execute(
                        f"INSERT INTO {bookkeeping.WATERMARKS} AS w (table_name, last_serial,"
                        " rows_copied) VALUES (%s, %s, %s) ON CONFLICT (table_name) DO UPDATE"
                        " SET last_serial = EXCLUDED.last_serial,"
                        " rows_copied = w.rows_copied + EXCLUDED.rows_copied, updated_tsz = now()",
                        (entry.name, hi, copied))
                else:
                    self.dst.execute(
                        f"INSERT INTO {bookkeeping.WATERMARKS} AS w (table_name, rows_copied) "
                        "VALUES (%s, %s) ON CONFLICT (table_name) DO UPDATE"
                        " SET rows_copied = w.rows_copied + EXCLUDED.rows_copied,"
                        " updated_tsz = now()", (entry.name, copied))
                self.dst.execute(
                    f"UPDATE {bookkeeping.HALTS} SET cleared_tsz = now() WHERE cleared_tsz IS NULL"
                    " AND table_name = %s AND (serial IS NULL OR serial <= %s)", (entry.name, hi))
        except psycopg.errors.IntegrityError as exc:
            violation = self._diagnose_batch(entry, lo, hi, exc)
        except psycopg.Error as exc:
            if _connection_problem(exc):
                raise ConnectionLost(f"lost a database connection while copying {entry.name}: "
                                     f"{_one_line(exc)}") from None
            if isinstance(exc, (psycopg.errors.DataError, psycopg.errors.InvalidBinaryRepresentation,
                                psycopg.errors.BadCopyFileFormat)):
                violation = self._diagnose_batch(entry, lo, hi, exc)
            else:
                raise TalerOpsError(f"copying {entry.name} serials {lo + 1}..{hi} failed: "
                                    f"{_one_line(exc)}") from None
        if violation:
            raise self._halt(*violation)
        return copied

    def _range_violation(self, entry, lo, hi, copied):
        """The source may send rows it was not asked for: they must land in (lo, hi] only."""
        s = q(entry.serial)
        have = self.dst.execute(
            f"SELECT count(*) FROM {qualified(entry.name)} WHERE {s} > %s AND {s} <= %s",
            (lo, hi)).fetchone()[0]
        if have == copied:
            return None
        return entry.name, hi, validate.OUT_OF_RANGE, (
            f"{entry.name}: asked for serials {lo + 1}..{hi}, the source sent {copied} rows of "
            f"which {have} are in that range")

    @staticmethod
    def _row_violation(entry, serial, text):
        rule, column, detail = text.split("\t", 2)
        return entry.name, serial, rule, f"{entry.name}.{column} {detail}"

    def _record_holes(self, entry, lo, hi, hole):
        """Serials missing among the batch's rows become holes (judged on the destination).

        A new hole remembers the source's clock and xmax of this pass; the pieces
        of a hole being filled keep the hole's own, so filling never extends a
        horizon.  Filling a hole: the batch starts at the hole's (remaining) lower
        end, and what is left above the batch stays a hole; a further batch in
        the same hole starts there and replaces it again.
        """
        s = q(entry.serial)
        if hole is None:
            origin = (self.clock[0], self.clock[2], self.pass_id)
        else:
            origin = (hole.source_clock, hole.source_xmax, hole.pass_id)
            # A cut taken while this hole was open did not hold these rows: spoiled.
            self.dst.execute(f"UPDATE {bookkeeping.CUTS} SET spoiled = true "
                             "WHERE pass_id >= %s AND NOT spoiled", (hole.pass_id,))
            self.dst.execute(f"DELETE FROM {bookkeeping.HOLES} WHERE table_name = %s AND lo = %s",
                             (entry.name, lo))
        self.dst.execute(
            f"INSERT INTO {bookkeeping.HOLES} (table_name, lo, hi, source_clock, source_xmax, "
            "pass_id) SELECT %(t)s, g.prev, g.s, %(clock)s, %(xmax)s, %(pass)s FROM "
            f"(SELECT {s} AS s, lag({s}, 1, %(lo)s) OVER (ORDER BY {s}) AS prev "
            f"FROM {qualified(entry.name)} WHERE {s} > %(lo)s AND {s} <= %(hi)s) g "
            "WHERE g.s > g.prev + 1",
            {"t": entry.name, "lo": lo, "hi": hi, "clock": origin[0], "xmax": origin[1],
             "pass": origin[2]})
        if hole is not None and hi + 1 < hole.hi:
            self.dst.execute(
                f"INSERT INTO {bookkeeping.HOLES} (table_name, lo, hi, source_clock, source_xmax, "
                "pass_id, seen_tsz) VALUES (%s, %s, %s, %s, %s, %s, %s)",
                (entry.name, hi, hole.hi) + origin + (hole.seen_tsz,))

    # -- diagnosis (slow path, only after a violation) --------------------------
    def _diagnose_batch(self, entry, lo, hi, exc):
        """Stage the batch in a temporary table on the destination and find its first offence."""
        reason = _one_line(exc)
        stage = "pg_temp.taler_ops_sync_stage"
        found = []
        try:
            with self.dst.transaction():
                # Same column types, no constraints: every row of the batch gets in.
                self.dst.execute(f"CREATE TEMPORARY TABLE {stage} ON COMMIT DROP AS "
                                 f"SELECT {validate.column_list(entry)} "
                                 f"FROM {qualified(entry.name)} WITH NO DATA")
                self._stream(entry, lo, hi, stage)
                row = self.dst.execute(validate.row_check(entry, stage),
                                       {"lo": lo, "hi": hi}).fetchone()
                if row:
                    found.append(self._row_violation(entry, *row)[1:])
                checks = validate.relation_checks(entry, stage, qualified(entry.name),
                                                  enforced_keys=None, foreign_keys=False)
                self._probe_by_index()
                for rule, query in checks:
                    row = self.dst.execute(query, {"lo": lo, "hi": hi}).fetchone()
                    if row:
                        found.append((row[0], rule, f"{entry.name} {row[1]}"))
                raise psycopg.Rollback()
        except psycopg.Error as exc2:
            if _connection_problem(exc2):
                raise ConnectionLost(f"lost a database connection: {_one_line(exc2)}") from None
            log.warning("diagnosing %s serials %s..%s failed: %s", entry.name, lo + 1, hi,
                        _one_line(exc2))
        if found:
            serial, rule, detail = min(found, key=lambda f: f[0])
            return entry.name, serial, rule, detail
        return entry.name, None, "constraint", (
            f"{entry.name} serials {lo + 1}..{hi} rejected by the safe copy: {reason}")

    def _halt(self, table, serial, rule, detail):
        halt = SyncHalt(table, serial, rule, detail)
        log.debug("%s", halt)   # the caller reports it: one HALT line, not two
        if not self.dry_run and self.dst is not None and not self.dst.closed:
            try:
                with self.dst.transaction():
                    known = self.dst.execute(
                        f"SELECT 1 FROM {bookkeeping.HALTS} WHERE cleared_tsz IS NULL AND "
                        "table_name = %s AND serial IS NOT DISTINCT FROM %s AND rule = %s",
                        (table, serial, rule)).fetchone()
                    if not known:
                        self.dst.execute(
                            f"INSERT INTO {bookkeeping.HALTS} (table_name, serial, rule, message) "
                            "VALUES (%s, %s, %s, %s)", (table, serial, rule, str(halt)))
            except psycopg.Error as exc:
                log.error("could not record the halt in %s: %s", bookkeeping.HALTS,
                          _one_line(exc))
        return halt


def hiding_places(conn, entries):
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


def schema_problems(conn, entries, destination=False):
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
    have, must_fill = {}, {}
    for rel, att, typ, required in rows:
        have.setdefault(rel, {})[att] = typ
        if required:
            must_fill.setdefault(rel, set()).add(att)
    problems, extras = [], []
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


def sync_once(src_uri, dst_uri, batch_size=DEFAULT_BATCH, dry_run=False, progress=None,
              stop=None, retries=3, trigger_free=None, hole_horizon=DEFAULT_HOLE_HORIZON):
    """Passes until one copies nothing (``-t``); a dry run makes exactly one pass.

    Serials still missing below a watermark stay recorded as open holes in the
    safe copy (``open_holes`` in the result), so a row committed late is copied
    by any later run, -t or daemon: exiting 0 never steps over a row.
    A connection lost (or a transient error) in the middle is retried ``retries``
    times with backoff; a database unreachable at the start fails at once.
    """
    totals = {"tables": {}, "copied": 0, "passes": 0, "dry_run": dry_run, "warnings": [],
              "open_holes": None, "holes_filled": 0}
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
            totals["warnings"] = result["warnings"]
            totals["open_holes"] = result.get("open_holes", totals["open_holes"])
            totals["holes_filled"] += result["holes_filled"]
            for name, info in result["tables"].items():
                agg = totals["tables"].setdefault(name, {"copied": 0})
                agg["copied"] += info["copied"]
                agg["watermark"] = info["watermark"]
                agg["source_max"] = info["source_max"]
            if dry_run or result["copied"] == 0 or result["stopped"]:
                totals["stopped"] = result["stopped"]
                return totals
    finally:
        syncer.close()


def _guarded_pass(syncer):
    try:
        return syncer.run_pass()
    except psycopg.Error as exc:
        if _connection_problem(exc):
            raise ConnectionLost(f"lost a database connection: {_one_line(exc)}") from None
        raise TalerOpsError(f"sync pass failed: {_one_line(exc)}") from None


class WakeHints:
    """LISTEN on the ingres for wake-up hints (sync/wakeup.py); without them, plain waiting.

    A notification only ends a wait early: it carries nothing the sync uses, and
    whether one comes never changes what a pass copies.  LISTEN fails on a hot
    standby (and where no trigger sends anything, nothing arrives): the daemon
    then polls as before.  A lost listening connection is opened again at most
    every RELISTEN seconds.
    """

    RELISTEN = 30.0
    SLICE = 0.5     # seconds; a SIGTERM is noticed within this while waiting

    def __init__(self, uri, stop):
        from .wakeup import CHANNEL
        self.uri, self.stop, self.channel = uri, stop, CHANNEL
        self.conn = None
        self.tried = float("-inf")
        self.hints = 0
        self.reason = None

    def _listen(self):
        if self.conn is not None or time.monotonic() - self.tried < self.RELISTEN:
            return self.conn
        self.tried = time.monotonic()
        try:
            conn = connect(self.uri, SOURCE_WHAT, autocommit=True)
        except TalerOpsError as exc:
            self._unavailable(str(exc))
            return None
        try:
            conn.execute(f"LISTEN {self.channel}")
        except psycopg.Error as exc:    # a hot standby: "cannot execute LISTEN during recovery"
            self._unavailable(_one_line(exc))
            conn.close()
            return None
        log.info("event=listening channel=%s", self.channel)
        self.reason = None
        self.conn = conn
        return conn

    def _unavailable(self, reason):
        # Logged once per cause, not every RELISTEN seconds (a standby never allows it).
        (log.info if reason != self.reason else log.debug)(
            "event=no-wakeup polling=yes reason=%s", reason)
        self.reason = reason

    def _drop(self, exc):
        self._unavailable(_one_line(exc))
        close_quietly(self.conn)
        self.conn = None

    def live(self):
        return self._listen() is not None

    def pending(self):
        """Did a hint arrive (since the last wait)?  Never blocks."""
        conn = self._listen()
        if conn is None:
            return False
        try:
            got = False
            for _ in conn.notifies(timeout=0):
                got = True
            if got:
                self.hints += 1
            return got
        except psycopg.Error as exc:
            self._drop(exc)
            return False

    def wait(self, delay):
        """Wait up to ``delay`` seconds, less if a hint arrives or ``stop`` is set.

        Returns True when a hint ended the wait.
        """
        deadline = time.monotonic() + delay
        while not self.stop.is_set():
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                return False
            conn = self._listen()
            if conn is None:
                self.stop.wait(min(remaining, self.SLICE))
                continue
            try:
                got = False
                for _ in conn.notifies(timeout=min(remaining, self.SLICE), stop_after=1):
                    got = True
                if got:
                    for _ in conn.notifies(timeout=0):   # one pass for all hints queued
                        pass
                    self.hints += 1
                    return True
            except psycopg.Error as exc:
                self._drop(exc)
        return False

    def close(self):
        close_quietly(self.conn)
        self.conn = None


HINT_GAP = 0.1   # seconds: after hinted passes that found nothing, hints wait at least this long


def run_daemon(src_uri, dst_uri, batch_size=DEFAULT_BATCH, progress=None, stop=None,
               on_pass=None, max_delay=MAX_IDLE_DELAY, hole_horizon=DEFAULT_HOLE_HORIZON,
               wakeup=True):
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
    Syncer._source_clock.
    """
    stop = stop or threading.Event()
    delay, backoff = 0.0, 1.0
    syncer = None
    hints = WakeHints(src_uri, stop) if wakeup else None
    woken = False
    futile = 0
    passes = copied = 0
    try:
        while not stop.is_set():
            try:
                if syncer is None:
                    syncer = Syncer(src_uri, dst_uri, batch_size, progress=progress,
                                    stop=stop, hole_horizon=hole_horizon).open()
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
