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
or since-filled hole makes inconsistent (``watermarks.end_pass``).  Then the
tables the pass's copies took over autovacuum's threshold are analyzed on the
safe copy (through a function dbinit created there: the sync's role does not
own them).

Any violation halts: the batch is rolled back, the first offending serial and
rule are diagnosed on the destination (the batch streamed again, in the same
snapshot, into an unconstrained temporary table), recorded in
``taler_ops.sync_halts`` in a transaction of their own, and SyncHalt is raised.
UPDATEs and DELETEs upstream are never propagated (sync/verify.py reports them).

The modules, by subject (each imports only those listed before it, and none
imports this facade):

- failures:    SyncHalt, SyncLocked, ConnectionLost; the halts' records
- validate:    the rules a record must satisfy, rendered as SQL for the safe copy
- holes:       serials missing below a watermark, the source's stream clock
- watermarks:  watermarks, pass cuts and complete_serial
- connections: the two sessions, the sync's lock, trigger-free inserts
- preflight:   patch levels, roles, columns and types, hiding places
- batch:       one batch: stream, check, commit or diagnose
- statistics:  the safe copy's planner statistics after passes that copied rows
- syncer:      Syncer, one pass over the tables
- wakeup:      the ingres' wake-up trigger and the daemon's LISTEN (WakeHints)
- daemon:      sync_once (-t, the Ansible module) and run_daemon
- verify:      what changed or vanished upstream after copying (read-only)

Every module logs as ``taler_ops.sync``, so a log line names the sync, not a file.
"""

from .daemon import HINT_GAP, MAX_BACKOFF, MAX_IDLE_DELAY, run_daemon, sync_once
from .failures import ConnectionLost, SyncHalt, SyncLocked
from .holes import Hole
from .preflight import PATCH_PREFIXES, hiding_places, schema_problems
from .syncer import DEFAULT_BATCH, DEFAULT_HOLE_HORIZON, Syncer
from .wakeup import WakeHints

__all__ = [
    "ConnectionLost", "DEFAULT_BATCH", "DEFAULT_HOLE_HORIZON", "HINT_GAP", "Hole", "MAX_BACKOFF",
    "MAX_IDLE_DELAY", "PATCH_PREFIXES", "SyncHalt", "SyncLocked", "Syncer", "WakeHints",
    "hiding_places", "run_daemon", "schema_problems", "sync_once",
]
