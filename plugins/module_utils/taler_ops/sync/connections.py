"""The sync's two sessions: the untrusted ingres copy (source) and the safe copy (destination).

Opening them sets what keeps the untrusted source from steering the reader
(search_path, row_security), takes the sync's advisory lock on the safe copy,
and decides whether the FK triggers on the safe copy run (``replica_role``).
"""

import logging
from dataclasses import dataclass
from typing import Any

import psycopg
from psycopg import IsolationLevel

from .. import locks
from ..db import close_quietly, connect
from ..errors import ConfigError, DatabaseNotReady
from ..schema import state
from .failures import ConnectionLost, SyncHalt, SyncLocked, record_halt

log = logging.getLogger("taler_ops.sync")

SOURCE_WHAT = "sync source (ingres) database"
DEST_WHAT = "sync destination (safe copy) database"


@dataclass
class Connections:
    """Open source and destination of one sync; ``dry_run``: nothing is written, halts neither."""

    src: psycopg.Connection[Any]
    dst: psycopg.Connection[Any]
    # The safe copy's FK triggers are off: the sync checks parents set-based itself.
    replica_role: bool
    dry_run: bool

    def halt(self, table: str, serial: int | None, rule: str, detail: str) -> SyncHalt:
        """The halt to raise, recorded in taler_ops.sync_halts unless this is a dry run."""
        halt = SyncHalt(table, serial, rule, detail)
        log.debug("%s", halt)   # the caller reports it: one HALT line, not two
        if not self.dry_run and not self.dst.closed:
            record_halt(self.dst, halt)
        return halt

    def close(self) -> None:
        close_quietly(self.src)
        close_quietly(self.dst)


def open_connections(src_uri: str, dst_uri: str, trigger_free: bool | None,
                     dry_run: bool) -> Connections:
    """Both sessions, set up; the source left in a REPEATABLE READ, READ ONLY transaction mode.

    ``trigger_free``: None uses trigger-free inserts when the destination role
    may; True requires them; False refuses where the safe copy needs them.
    """
    src = dst = None
    try:
        src = connect(src_uri, SOURCE_WHAT, autocommit=True)
        dst = connect(dst_uri, DEST_WHAT, autocommit=True)
    except DatabaseNotReady as exc:
        close_quietly(src)
        raise ConnectionLost(str(exc)) from None
    for conn in (src, dst):
        # format_type() then names exchange.taler_amount in full, and nothing an
        # untrusted source adds to its schemas can shadow the functions we call.
        conn.execute("SET search_path TO pg_catalog, pg_temp")
        conn.execute("SET bytea_output TO hex")
    # A query that row-level security would filter now fails instead of
    # silently returning fewer rows (the ingres owner may define policies).
    src.execute("SET row_security TO off")
    # A dry run takes the lock too: it inserts (then rolls back) the same rows, and
    # racing a running sync would end in a false duplicate-key halt.
    if not locks.try_hold(dst, locks.SYNC):
        close_quietly(src)
        close_quietly(dst)
        raise SyncLocked("another taler-ops sync is already running against this "
                         "safe copy (advisory lock held); exiting")
    # A safe copy built from Taler's own SQL carries Taler's triggers (history
    # tables, purse decisions): they are the exchange's business logic, not
    # checks, and must not run again on copied rows.
    required = bool(trigger_free) or state.exchange_flavour(dst) == "taler"
    if required and trigger_free is False:
        close_quietly(src)
        close_quietly(dst)
        raise ConfigError("the safe copy was built from Taler's SQL files: its triggers must "
                          "not fire on copied rows, so the sync cannot run with them on")
    replica_role = False
    if trigger_free is not False:
        try:
            replica_role = _try_replica_role(dst, required)
        except ConfigError:
            close_quietly(src)
            close_quietly(dst)
            raise
    src.autocommit = False
    src.isolation_level = IsolationLevel.REPEATABLE_READ
    src.read_only = True
    return Connections(src, dst, replica_role, dry_run)


def _try_replica_role(dst: psycopg.Connection[Any], required: bool) -> bool:
    """Skip the FK triggers if allowed: the sync then checks parents set-based itself.

    A per-row RI trigger costs about as much as the insert it checks (and
    locks the parent row); one anti-join per batch and FK is far cheaper.
    Needs superuser or, on PostgreSQL >= 15,
    ``GRANT SET ON PARAMETER session_replication_role TO <sync role>``.
    ``required``: refuse to run without it (exit 6) instead of going on with triggers.
    """
    try:
        dst.execute("SET session_replication_role = replica")
        return True
    except psycopg.errors.InsufficientPrivilege:
        if required:
            raise ConfigError("the destination role may not SET session_replication_role "
                              "(GRANT SET ON PARAMETER session_replication_role TO it); a "
                              "safe copy built from Taler's SQL files needs it") from None
        return False
