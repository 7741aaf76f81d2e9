"""Wake-up hints from the ingres copy to the sync daemon (LISTEN/NOTIFY).

A logical-replication apply worker fires row-level triggers marked ``ENABLE
ALWAYS`` (it runs with ``session_replication_role = replica``) but no
statement-level ones.  ``install`` puts one such AFTER INSERT row trigger on
every replicated ingres table; it calls ``pg_notify(CHANNEL, '')``, which
PostgreSQL folds into one notification per transaction and delivers when the
applied transaction commits.  The sync daemon LISTENs on the ingres and starts a
pass at once instead of waiting for its next poll.

The ingres copy is untrusted: a notification is only a hint *when* to look.
It carries no data, the sync never decides anything from it, and polling stays
as the fallback (a missing, removed or disabled trigger, a hot-standby ingres
where LISTEN is impossible, or a flood of fake notifications only change when a
pass starts, never what it copies).

Both ends live here: ``install`` (the trigger, on the ingres) and ``WakeHints``
(the daemon's listening side).
"""

import logging
import threading
import time
from typing import Any

import psycopg
from psycopg import sql

from ..db import close_quietly, connect
from ..errors import TalerOpsError
from ..schema import registry
from .connections import SOURCE_WHAT
from .failures import one_line

log = logging.getLogger("taler_ops.sync")

CHANNEL = "taler_ops_ingres"
TRIGGER = "taler_ops_wake_sync"

_FUNCTION = f"""
CREATE OR REPLACE FUNCTION taler_ops.wake_sync() RETURNS trigger
LANGUAGE plpgsql SET search_path = pg_catalog AS $$
BEGIN
  PERFORM pg_notify('{CHANNEL}', '');
  RETURN NULL;
END $$
"""


def install(conn: psycopg.Connection[Any]) -> tuple[int, int]:
    """Put the trigger on every replicated table (and partition), enabled ALWAYS.

    Returns (tables, triggers created); idempotent.

    Needs a login that may create triggers on the ingres tables (the ingres superuser).
    """
    conn.execute("CREATE SCHEMA IF NOT EXISTS taler_ops")
    conn.execute(_FUNCTION)
    n = created = 0
    for entry in registry.REPLICATED:
        table = sql.Identifier("exchange", entry.name)
        row = conn.execute(
            "SELECT EXISTS (SELECT 1 FROM pg_trigger WHERE tgrelid = %s::regclass "
            "AND tgname = %s)", (f"exchange.{entry.name}", TRIGGER)).fetchone()
        assert row is not None      # EXISTS returns its one row
        if not row[0]:
            conn.execute(sql.SQL("CREATE TRIGGER {} AFTER INSERT ON {} FOR EACH ROW "
                                 "EXECUTE FUNCTION taler_ops.wake_sync()").format(
                sql.Identifier(TRIGGER), table))
            created += 1
        leaves = conn.execute(
            "SELECT n.nspname, c.relname FROM pg_class c"
            " JOIN pg_namespace n ON n.oid = c.relnamespace WHERE c.oid IN ("
            " SELECT %s::regclass UNION SELECT relid FROM pg_partition_tree(%s::regclass))",
            (f"exchange.{entry.name}",) * 2).fetchall()
        for schema, rel in leaves:
            conn.execute(sql.SQL("ALTER TABLE {} ENABLE ALWAYS TRIGGER {}").format(
                sql.Identifier(schema, rel), sql.Identifier(TRIGGER)))
        n += 1
    return n, created


class WakeHints:
    """LISTEN on the ingres for wake-up hints; without them, plain waiting.

    A notification only ends a wait early: it carries nothing the sync uses, and
    whether one comes never changes what a pass copies.  LISTEN fails on a hot
    standby (and where no trigger sends anything, nothing arrives): the daemon
    then polls as before.  A lost listening connection is opened again at most
    every RELISTEN seconds.
    """

    RELISTEN = 30.0
    SLICE = 0.5     # seconds; a SIGTERM is noticed within this while waiting

    def __init__(self, uri: str, stop: threading.Event) -> None:
        self.uri, self.stop, self.channel = uri, stop, CHANNEL
        self.conn: psycopg.Connection[Any] | None = None
        self.tried = float("-inf")
        self.hints = 0
        self.reason: str | None = None

    def _listen(self) -> psycopg.Connection[Any] | None:
        if self.conn is not None or time.monotonic() - self.tried < self.RELISTEN:
            return self.conn
        self.tried = time.monotonic()
        try:
            conn: psycopg.Connection[Any] = connect(self.uri, SOURCE_WHAT, autocommit=True)
        except TalerOpsError as exc:
            self._unavailable(str(exc))
            return None
        try:
            conn.execute(f"LISTEN {self.channel}")
        except psycopg.Error as exc:    # a hot standby: "cannot execute LISTEN during recovery"
            self._unavailable(one_line(exc))
            conn.close()
            return None
        log.info("event=listening channel=%s", self.channel)
        self.reason = None
        self.conn = conn
        return conn

    def _unavailable(self, reason: str) -> None:
        # Logged once per cause, not every RELISTEN seconds (a standby never allows it).
        (log.info if reason != self.reason else log.debug)(
            "event=no-wakeup polling=yes reason=%s", reason)
        self.reason = reason

    def _drop(self, exc: psycopg.Error) -> None:
        self._unavailable(one_line(exc))
        close_quietly(self.conn)
        self.conn = None

    def live(self) -> bool:
        return self._listen() is not None

    def pending(self) -> bool:
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

    def wait(self, delay: float) -> bool:
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

    def close(self) -> None:
        close_quietly(self.conn)
        self.conn = None
