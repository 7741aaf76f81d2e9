"""The safe sync: copy new, valid, append-only records from ingres to the safe copy.

One *pass* reads the source in one REPEATABLE READ, READ ONLY transaction (so a
hot standby works as a source and every table is cut at the same instant:
children can never reference parents committed after the parents were copied,
taler-facts §8.1).  For every registry table in copy order it copies the rows
with ``watermark < serial <= max(serial) in the snapshot`` in batches of at
most ``batch_size`` rows:

1. one source query finds the batch's last serial and the first row breaking a
   row rule (validate.py) — set-based, in the snapshot;
2. the batch is streamed as binary COPY from the source into the destination
   table (only the copied columns; derived hashes recomputed by the source
   query), never decoded in Python, so memory does not depend on the backlog;
3. the destination's constraints (FKs, keys) check relations; where it cannot
   (partitioned safe copy) the same checks run explicitly before commit;
4. the batch and the table's watermark in ``exchange.sync_watermarks`` commit
   in one transaction, so a crash at any point neither duplicates nor skips.

Any violation halts: the batch is rolled back, the first offending serial and
rule are diagnosed (slow path, still in the snapshot), recorded in
``exchange.sync_halts`` in a transaction of their own, and SyncHalt is raised.
UPDATEs and DELETEs upstream are never propagated (verify.py reports them).
"""

import collections
import logging
import re
import threading
import time

import psycopg
from psycopg import IsolationLevel

from . import dbinit, exchange_schema, registry, validate, versioning
from .db import connect
from .errors import ConfigError, DatabaseNotReady, TalerOpsError
from .validate import q, qualified

log = logging.getLogger("taler_ops.sync")

DEFAULT_BATCH = 20000
CHUNK_BYTES = 1 << 17        # bytes handed to libpq per write while streaming
MAX_IDLE_DELAY = 5.0        # seconds between passes when idle (daemon)
DEFAULT_SETTLE = 2.0        # daemon: copy serials seen at least this long ago
# Sequence gaps are normal (aborted inserts, ON CONFLICT DO NOTHING, crashes), but
# a jump this large would move the watermark past the serials the exchange hands
# out next, so the sync would silently skip them: a planted row, halt on it.
MAX_SERIAL_GAP = 1_000_000
MAX_BACKOFF = 60.0          # seconds between reconnection attempts
SYNC_LOCK_KEY = 0x7A1E_5C01  # advisory lock: one sync per destination database
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


class Syncer:
    """One source/destination pair; ``run_pass`` copies one consistent snapshot."""

    def __init__(self, src_uri, dst_uri, batch_size=DEFAULT_BATCH, dry_run=False,
                 progress=None, stop=None, tables=None, trigger_free=None, settle=0.0,
                 max_serial_gap=None):
        if batch_size < 1:
            raise TalerOpsError("the batch size (-b) must be at least 1", exit_code=2)
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
        self.settle = settle
        self.max_serial_gap = MAX_SERIAL_GAP if max_serial_gap is None else max_serial_gap
        self._seen = collections.deque()   # (monotonic time, {table: max serial})

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
        if not self.dry_run:
            got = self.dst.execute("SELECT pg_try_advisory_lock(%s)", (SYNC_LOCK_KEY,)).fetchone()[0]
            if not got:
                self.close()
                raise SyncLocked("another taler-ops sync is already running against this "
                                 "safe copy (advisory lock held); exiting")
        self.replica_role = False
        if not self.dry_run and self.trigger_free is not False:
            self.replica_role = self._try_replica_role()
        self.src.autocommit = False
        self.src.isolation_level = IsolationLevel.REPEATABLE_READ
        self.src.read_only = True
        return self

    def _try_replica_role(self):
        """Skip the FK triggers if allowed: the sync then checks parents set-based itself.

        A per-row RI trigger costs about as much as the insert it checks (and
        locks the parent row); one anti-join per batch and FK is far cheaper.
        Needs superuser or, on PostgreSQL >= 15,
        ``GRANT SET ON PARAMETER session_replication_role TO <sync role>``.
        """
        try:
            self.dst.execute("SET session_replication_role = replica")
            return True
        except psycopg.errors.InsufficientPrivilege:
            if self.trigger_free:
                self.close()
                raise ConfigError("the destination role may not SET session_replication_role "
                                  "(GRANT SET ON PARAMETER session_replication_role TO it)") from None
            return False

    def close(self):
        for conn in (self.src, self.dst):
            if conn is not None:
                try:
                    conn.close()
                except psycopg.Error:
                    pass
        self.src = self.dst = None

    def __enter__(self):
        return self.open()

    def __exit__(self, *exc):
        self.close()

    # -- preflight -------------------------------------------------------------
    def preflight(self):
        """Patch levels (exit 5), roles, and the source's columns and types (halt)."""
        self._refuse_source_ahead()
        dbinit.assert_exchange_current(self.src, SOURCE_WHAT)
        dbinit.assert_exchange_current(self.dst, DEST_WHAT)
        self.src.rollback()
        src_setup = dbinit.read_setup(self.src)
        self.src.rollback()
        dst_setup = dbinit.read_setup(self.dst)
        if dst_setup[0] != "safe-copy":
            raise ConfigError(
                f"the destination database was created as {dst_setup[0]!r}, not 'safe-copy': "
                "refusing to sync into it (create it with exchange-dbinit --role safe-copy)")
        if src_setup[0] == "safe-copy":
            raise ConfigError("the source database is itself a 'safe-copy': the sync reads the "
                              "ingres copy (or the primary), refusing")
        self.dst_setup = dst_setup
        self.warnings = []
        for side, conn in (("source", self.src), ("destination", self.dst)):
            problems, extras = schema_problems(conn, self.entries)
            if conn is self.src:
                conn.rollback()
            for table, message in extras:
                self.warnings.append(f"{side} table {table}: {message} (not copied)")
                log.warning("%s table %s: %s (not copied)", side, table, message)
            if problems:
                table, message = problems[0]
                raise self._halt(table, None, validate.SCHEMA_DRIFT, f"{side}: {message}")

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
        result = {"tables": {}, "copied": 0, "stopped": False, "warnings": list(self.warnings)}
        try:
            self._refuse_source_ahead(in_snapshot=True)
            maxima = self._source_maxima()
            limits = self._settled(maxima)
            marks = self._watermarks()
            for entry in self.entries:
                if self.stop.is_set():
                    result["stopped"] = True
                    break
                wm = marks.get(entry.name, 0)
                top = maxima.get(entry.name)
                info = {"copied": 0, "watermark": wm, "source_max": top}
                result["tables"][entry.name] = info
                if wm and (top is None or top < wm):
                    # Rows the safe copy holds are gone upstream: verify tells which.
                    self._warn(result, f"{entry.name}: the source's largest serial "
                                       f"({top}) is below the watermark {wm}")
                top = limits.get(entry.name)
                if top is None or top <= wm:
                    continue
                self._copy_table(entry, wm, top, info, result)
                if info.get("stopped"):
                    result["stopped"] = True
                    break
            if not result["stopped"] and not self.dry_run:
                self._mark_complete()
        finally:
            if self.src is not None and not self.src.closed:
                try:
                    self.src.rollback()
                except psycopg.Error:
                    pass
        result["seconds"] = round(time.monotonic() - started, 3)
        return result

    def _mark_complete(self):
        """Every table is now copied up to one snapshot: publish that cut for the audit.

        Mid-pass, the safe copy can hold a withdrawal without the merge that funded
        it (tables commit one after the other); ``complete_serial`` only moves here.
        """
        names = [e.name for e in self.entries]
        with self.dst.transaction():
            self.dst.execute(
                "INSERT INTO exchange.sync_watermarks (table_name) SELECT unnest(%s::text[]) "
                "ON CONFLICT (table_name) DO NOTHING", (names,))
            self.dst.execute(
                "UPDATE exchange.sync_watermarks SET complete_serial = last_serial "
                "WHERE table_name = ANY(%s) AND complete_serial <> last_serial", (names,))

    def _settled(self, maxima):
        """Per table, the largest serial that may be copied now.

        Serials are handed out at insert but transactions commit in another
        order: serial 101 can be visible while 100 is still in flight.  With
        ``settle`` > 0 a pass copies only up to the maxima seen at least
        ``settle`` seconds ago, so a row committed out of order within that
        window is not stepped over by the watermark.
        """
        if self.settle <= 0:
            return maxima
        now = time.monotonic()
        self._seen.append((now, maxima))
        ripe = None
        while self._seen and self._seen[0][0] <= now - self.settle:
            ripe = self._seen.popleft()
        if ripe is None:
            return {}
        self._seen.appendleft(ripe)   # still the newest ripe view next time
        return {name: min(top, ripe[1].get(name) or 0) if top is not None else None
                for name, top in maxima.items()}

    def _warn(self, result, message):
        log.warning("%s", message)
        result["warnings"].append(message)

    def _source_maxima(self):
        query = " UNION ALL ".join(
            f"SELECT {validate.lit(e.name)}, (SELECT max({q(e.serial)}) FROM {qualified(e.name)})"
            for e in self.entries)
        return dict(self.src.execute(query).fetchall())

    def _watermarks(self):
        rows = self.dst.execute(
            "SELECT table_name, last_serial FROM exchange.sync_watermarks").fetchall()
        return dict(rows)

    def _copy_table(self, entry, lo, top, info, result):
        s = q(entry.serial)
        # gap: distance to the previous serial (the watermark for the batch's first
        # row; none for the very first row of a table's history).
        scan = (f"SELECT count(*), max(b.s), min(b.s) FILTER (WHERE b.bad), "
                f"min(b.s) FILTER (WHERE b.gap > %(maxgap)s) FROM "
                f"(SELECT {s} AS s, {validate.any_violation_sql(entry)} AS bad, "
                f"{s} - lag({s}, 1, CASE WHEN %(lo)s = 0 THEN {s} ELSE %(lo)s END) "
                f"OVER (ORDER BY {s}) AS gap "
                f"FROM {qualified(entry.name)} WHERE {s} > %(lo)s AND {s} <= %(top)s "
                f"ORDER BY {s} LIMIT %(n)s) b")
        t0 = time.monotonic()
        while lo < top:
            if self.stop.is_set():
                info["stopped"] = True
                return
            count, hi, bad, jump = self.src.execute(
                scan, {"lo": lo, "top": top, "n": self.batch_size,
                       "maxgap": self.max_serial_gap}).fetchone()
            if not count:
                break
            if bad is not None and (jump is None or bad <= jump):
                raise self._halt(*self._diagnose_row(entry, bad))
            if jump is not None:
                raise self._halt(*self._diagnose_gap(entry, jump, lo))
            if not self.dry_run:
                self._copy_batch(entry, lo, hi, count)
            lo = hi
            info["copied"] += count
            info["watermark"] = hi
            result["copied"] += count
            elapsed = time.monotonic() - t0
            self.progress({"table": entry.name, "rows": info["copied"], "watermark": hi,
                           "source_max": top, "seconds": elapsed,
                           "rows_per_s": info["copied"] / elapsed if elapsed > 0 else None})

    def _copy_out_sql(self, entry, lo, hi):
        s = q(entry.serial)
        return (f"COPY (SELECT {validate.copy_select_list(entry)} FROM {qualified(entry.name)} "
                f"WHERE {s} > {int(lo)} AND {s} <= {int(hi)} ORDER BY {s}) "
                "TO STDOUT (FORMAT BINARY)")

    def _stream(self, entry, lo, hi, target):
        """Stream (lo, hi] from the source into ``target`` inside the current dst transaction.

        The source COPY is always read to its end, even when the destination
        fails, so the source transaction (and its snapshot) survives for the diagnosis.
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

    def _copy_batch(self, entry, lo, hi, count):
        partitions = self.dst_setup[1]
        foreign_keys = self.dst_setup[2] and not self.replica_role
        enforced = validate.globally_enforced_keys(entry, partitions)
        checks = validate.relation_checks(entry, qualified(entry.name), qualified(entry.name),
                                          enforced_keys=enforced, foreign_keys=foreign_keys)
        violation = None
        try:
            with self.dst.transaction():
                self._stream(entry, lo, hi, qualified(entry.name))
                params = {"lo": lo, "hi": hi}
                if checks:
                    self._probe_by_index()
                for rule, query in checks:
                    row = self.dst.execute(query, params).fetchone()
                    if row:
                        violation = (entry.name, row[0], rule, row[1])
                        raise psycopg.Rollback()
                self.dst.execute(
                    "INSERT INTO exchange.sync_watermarks AS w (table_name, last_serial, rows_copied)"
                    " VALUES (%s, %s, %s) ON CONFLICT (table_name) DO UPDATE"
                    " SET last_serial = EXCLUDED.last_serial,"
                    " rows_copied = w.rows_copied + EXCLUDED.rows_copied, updated_tsz = now()",
                    (entry.name, hi, count))
                self.dst.execute(
                    "UPDATE exchange.sync_halts SET cleared_tsz = now() WHERE cleared_tsz IS NULL"
                    " AND table_name = %s AND (serial IS NULL OR serial <= %s)", (entry.name, hi))
        except psycopg.errors.IntegrityError as exc:
            violation = self._diagnose_batch(entry, lo, hi, exc)
        except psycopg.Error as exc:
            if _connection_problem(exc):
                raise ConnectionLost(f"lost a database connection while copying {entry.name}: "
                                     f"{_one_line(exc)}") from None
            if isinstance(exc, (psycopg.errors.DataError, psycopg.errors.InvalidBinaryRepresentation)):
                violation = self._diagnose_batch(entry, lo, hi, exc)
            else:
                raise TalerOpsError(f"copying {entry.name} serials {lo + 1}..{hi} failed: "
                                    f"{_one_line(exc)}") from None
        if violation:
            raise self._halt(*violation)

    # -- diagnosis (slow path, only after a violation) --------------------------
    def _diagnose_row(self, entry, serial):
        row = self.src.execute(
            f"SELECT {validate.first_violation_sql(entry)} FROM {qualified(entry.name)} "
            f"WHERE {q(entry.serial)} = %s", (serial,)).fetchall()
        for (text,) in row:
            if text:
                rule, column, detail = text.split("\t", 2)
                return entry.name, serial, rule, f"{entry.name}.{column} {detail}"
        return entry.name, serial, "unknown", "row rule violated"

    def _diagnose_gap(self, entry, serial, lo):
        s = q(entry.serial)
        prev = self.src.execute(
            f"SELECT coalesce(max({s}), %s) FROM {qualified(entry.name)} "
            f"WHERE {s} > %s AND {s} < %s", (lo, lo, serial)).fetchone()[0]
        return entry.name, serial, validate.SERIAL_GAP, (
            f"{entry.name} serial {serial} follows serial {prev}: a jump of {serial - prev} "
            f"(limit {self.max_serial_gap}) would put the watermark past every serial the "
            "exchange hands out next")

    def _diagnose_batch(self, entry, lo, hi, exc):
        """Stage the batch in a temporary table and find its first offending row."""
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
                checks = validate.relation_checks(entry, stage, qualified(entry.name),
                                                  enforced_keys=None, foreign_keys=False)
                self._probe_by_index()
                for rule, query in checks:
                    row = self.dst.execute(query, {"lo": lo, "hi": hi}).fetchone()
                    if row:
                        found.append((row[0], rule, row[1]))
                raise psycopg.Rollback()
        except psycopg.Error as exc2:
            if _connection_problem(exc2):
                raise ConnectionLost(f"lost a database connection: {_one_line(exc2)}") from None
            log.warning("diagnosing %s serials %s..%s failed: %s", entry.name, lo + 1, hi,
                        _one_line(exc2))
        if found:
            serial, rule, detail = min(found, key=lambda f: f[0])
            return entry.name, serial, rule, f"{entry.name} {detail}"
        return entry.name, None, "constraint", (
            f"{entry.name} serials {lo + 1}..{hi} rejected by the safe copy: {reason}")

    def _halt(self, table, serial, rule, detail):
        halt = SyncHalt(table, serial, rule, detail)
        log.debug("%s", halt)   # the caller reports it: one HALT line, not two
        if not self.dry_run and self.dst is not None and not self.dst.closed:
            try:
                with self.dst.transaction():
                    known = self.dst.execute(
                        "SELECT 1 FROM exchange.sync_halts WHERE cleared_tsz IS NULL AND "
                        "table_name = %s AND serial IS NOT DISTINCT FROM %s AND rule = %s",
                        (table, serial, rule)).fetchone()
                    if not known:
                        self.dst.execute(
                            "INSERT INTO exchange.sync_halts (table_name, serial, rule, message) "
                            "VALUES (%s, %s, %s, %s)", (table, serial, rule, str(halt)))
            except psycopg.Error as exc:
                log.error("could not record the halt in exchange.sync_halts: %s", _one_line(exc))
        return halt


def schema_problems(conn, entries):
    """([(table, drift)], [(table, extra column)]) of one side against the registry."""
    rows = conn.execute(
        """SELECT c.relname, a.attname, format_type(a.atttypid, a.atttypmod)
             FROM pg_class c
             JOIN pg_namespace n ON n.oid = c.relnamespace AND n.nspname = 'exchange'
             JOIN pg_attribute a ON a.attrelid = c.oid AND a.attnum > 0 AND NOT a.attisdropped
            WHERE c.relkind IN ('r', 'p')""").fetchall()
    have = {}
    for rel, att, typ in rows:
        have.setdefault(rel, {})[att] = typ
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
            extras.append((entry.name, f"unexpected column {name}"))
    return problems, extras


def sync_once(src_uri, dst_uri, batch_size=DEFAULT_BATCH, dry_run=False, progress=None,
              stop=None, retries=3, trigger_free=None):
    """Passes until one copies nothing (``-t``); a dry run makes exactly one pass.

    A connection lost (or a transient error) in the middle is retried ``retries``
    times with backoff; a database unreachable at the start fails at once.
    """
    totals = {"tables": {}, "copied": 0, "passes": 0, "dry_run": dry_run, "warnings": []}
    syncer = Syncer(src_uri, dst_uri, batch_size, dry_run, progress, stop,
                    trigger_free=trigger_free).open()
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


def run_daemon(src_uri, dst_uri, batch_size=DEFAULT_BATCH, progress=None, stop=None,
               on_pass=None, max_delay=MAX_IDLE_DELAY, settle=DEFAULT_SETTLE):
    """Keep the safe copy fresh until ``stop`` is set; halts and schema problems end it.

    LISTEN/NOTIFY cannot be relied on (a logical-replication subscriber fires no
    statement-level NOTIFY for applied rows), so it polls adaptively: at once
    after a busy pass, doubling up to ``max_delay`` while idle.  Lost connections
    and transient errors are retried with exponential backoff up to MAX_BACKOFF.
    ``settle``: see Syncer._settled.
    """
    stop = stop or threading.Event()
    delay, backoff = 0.0, 1.0
    syncer = None
    passes = copied = 0
    try:
        while not stop.is_set():
            try:
                if syncer is None:
                    syncer = Syncer(src_uri, dst_uri, batch_size, progress=progress,
                                    stop=stop, settle=settle).open()
                    log.info("event=connected")
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
            else:
                delay = min(max_delay, max(0.1, delay * 2))
            stop.wait(delay)
    finally:
        if syncer is not None:
            syncer.close()
    return {"passes": passes, "copied": copied}
