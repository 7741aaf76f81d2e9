"""Replication health as PostgreSQL reports it: publisher slots, subscriber workers
and a streaming standby's WAL receiver.

Read-only catalog queries, shared by ``taler-ops status``, the metrics and the
upgrade playbook's drain step (publisher WAL position confirmed by the
subscription, then, with a streaming ingres, replayed by the standby:
the taler_standby_replay module).
"""

import re
import time
from typing import Any, NotRequired, TypedDict

import psycopg

from ..db import connect, describe, one_row
from ..errors import DatabaseNotReady, TalerOpsError, UsageError


class Instance(TypedDict):
    up: bool
    version: NotRequired[str]         # when up
    in_recovery: NotRequired[bool]    # when up: a hot standby
    error: NotRequired[str]           # when down: why


def instance(uri: str, what: str) -> Instance:
    """Is the server up, and what is it: {up, version, in_recovery} or {up: False, error}."""
    try:
        conn = connect(uri, what, autocommit=True, connect_timeout=5)
    except DatabaseNotReady as exc:
        return {"up": False, "error": str(exc)}
    with conn:
        version, recovery = one_row(conn.execute(
            "SELECT current_setting('server_version'), pg_is_in_recovery()"))
    return {"up": True, "version": version, "in_recovery": recovery}


_SLOTS = """
SELECT s.slot_name, s.slot_type, s.database, s.active, s.wal_status,
       s.safe_wal_size,
       pg_wal_lsn_diff(pg_current_wal_insert_lsn(), s.restart_lsn)::int8 AS retained_bytes,
       pg_wal_lsn_diff(pg_current_wal_insert_lsn(),
                       COALESCE(s.confirmed_flush_lsn, s.restart_lsn))::int8 AS lag_bytes,
       pg_current_wal_insert_lsn()::text AS current_lsn,
       COALESCE(s.confirmed_flush_lsn, s.restart_lsn)::text AS confirmed_lsn,
       s.active_pid, r.state AS sender_state, l.ssl
  FROM pg_replication_slots s
  LEFT JOIN pg_stat_replication r ON r.pid = s.active_pid
  LEFT JOIN pg_stat_ssl l ON l.pid = s.active_pid
 WHERE %(slot)s::text IS NULL OR s.slot_name = %(slot)s
 ORDER BY s.slot_name
"""


def publisher_slots(conn: psycopg.Connection[Any], slot_name: str | None = None) -> list[dict[str, Any]]:
    """Replication slots on the exchange primary: state, retained WAL and lag in bytes."""
    cur = conn.cursor(row_factory=psycopg.rows.dict_row)
    return cur.execute(_SLOTS, {"slot": slot_name}).fetchall()


_SUBSCRIPTIONS = """
SELECT s.subname AS name, s.subenabled AS enabled,
       st.pid AS worker_pid, st.received_lsn::text AS received_lsn,
       st.latest_end_lsn::text AS latest_end_lsn,
       st.last_msg_receipt_time, st.latest_end_time,
       ss.apply_error_count, ss.sync_error_count,
       (SELECT count(*) FROM pg_subscription_rel r
         WHERE r.srsubid = s.oid AND r.srsubstate <> 'r') AS tables_not_ready
  FROM pg_subscription s
  LEFT JOIN pg_stat_subscription st ON st.subid = s.oid AND st.relid IS NULL
  LEFT JOIN pg_stat_subscription_stats ss ON ss.subid = s.oid
 WHERE s.subdbid = (SELECT oid FROM pg_database WHERE datname = current_database())
 ORDER BY s.subname
"""


# pg_stat_wal_receiver shows its details to superusers and pg_read_all_stats only;
# other roles (the sync's) see the pid alone, so a receiver's existence is known.
_WAL_RECEIVER = """
SELECT r.pid AS receiver_pid, r.status, r.slot_name, r.sender_host, r.sender_port,
       r.flushed_lsn::text AS flushed_lsn, r.latest_end_lsn::text AS latest_end_lsn,
       r.last_msg_receipt_time, r.latest_end_time,
       pg_last_wal_receive_lsn()::text AS receive_lsn,
       pg_last_wal_replay_lsn()::text AS replay_lsn,
       pg_wal_lsn_diff(pg_last_wal_receive_lsn(), pg_last_wal_replay_lsn())::int8
           AS replay_lag_bytes,
       pg_last_xact_replay_timestamp() AS last_replay_time,
       pg_is_wal_replay_paused() AS replay_paused,
       current_setting('hot_standby_feedback')::bool AS hot_standby_feedback
  FROM (SELECT 1) one LEFT JOIN pg_stat_wal_receiver r ON true
"""


def wal_receiver(conn: psycopg.Connection[Any]) -> dict[str, Any]:
    """A hot standby's WAL receiver and replay position (run on the standby)."""
    cur = conn.cursor(row_factory=psycopg.rows.dict_row)
    return one_row(cur.execute(_WAL_RECEIVER))    # the LEFT JOIN makes it one row, always


def subscriptions(conn: psycopg.Connection[Any]) -> list[dict[str, Any]]:
    """Subscriptions of the ingres database with their apply worker's state and errors."""
    cur = conn.cursor(row_factory=psycopg.rows.dict_row)
    return cur.execute(_SUBSCRIPTIONS).fetchall()


def current_wal_lsn(conn: psycopg.Connection[Any]) -> str:
    """Where the publisher's WAL ends, commits still in WAL buffers included.

    pg_current_wal_lsn() is the *write* position: with asynchronous commit it can
    lie before the last commit, and a drain check against it passes too early.
    """
    return str(one_row(conn.execute("SELECT pg_current_wal_insert_lsn()::text"))[0])


def slot_confirmed(conn: psycopg.Connection[Any], slot_name: str, lsn: str) -> bool:
    """Has the subscriber confirmed everything up to ``lsn`` (publisher side)?

    A physical slot has no confirmed_flush_lsn: its restart_lsn is what the
    standby has flushed (received, not necessarily replayed: see standby_replayed).
    """
    row = conn.execute(
        "SELECT pg_wal_lsn_diff(COALESCE(confirmed_flush_lsn, restart_lsn), %s::pg_lsn) >= 0 "
        "FROM pg_replication_slots WHERE slot_name = %s", (lsn, slot_name)).fetchone()
    return bool(row and row[0])


class Replay(TypedDict):
    """Where a server's WAL replay stands against a primary's position ``target_lsn``."""
    target_lsn: str
    in_recovery: bool           # false: a primary (or a promoted standby), which replays nothing
    replayed_lsn: str | None    # pg_last_wal_replay_lsn(); None on a primary
    received_lsn: str | None    # pg_last_wal_receive_lsn(): streamed and flushed, maybe not replayed
    replayed: bool              # replayed_lsn >= target_lsn
    paused: bool                # replay paused (pg_wal_replay_pause()); never on a primary


# pg_is_wal_replay_paused() raises on a server not in recovery: CASE keeps it from
# being called there.  Every function here is executable by any role.
_REPLAY = """
SELECT pg_is_in_recovery(), pg_last_wal_replay_lsn()::text, pg_last_wal_receive_lsn()::text,
       COALESCE(pg_wal_lsn_diff(pg_last_wal_replay_lsn(), %(lsn)s::pg_lsn) >= 0, false),
       CASE WHEN pg_is_in_recovery() THEN pg_is_wal_replay_paused() ELSE false END
"""

# pg_lsn's text form: two hexadecimal numbers of at most 32 bits each.
_LSN = re.compile(r"[0-9A-Fa-f]{1,8}/[0-9A-Fa-f]{1,8}")


def replay(conn: psycopg.Connection[Any], lsn: str) -> Replay:
    """One look at the server's WAL replay (run on the standby) against ``lsn``."""
    if not _LSN.fullmatch(lsn):
        raise UsageError(f"{lsn!r} is not a WAL position (pg_lsn, e.g. 0/3A2F1C8)")
    in_recovery, replayed_lsn, received_lsn, replayed, paused = one_row(
        conn.execute(_REPLAY, {"lsn": lsn}))
    return {"target_lsn": lsn, "in_recovery": in_recovery, "replayed_lsn": replayed_lsn,
            "received_lsn": received_lsn, "replayed": replayed, "paused": paused}


def standby_replayed(conn: psycopg.Connection[Any], lsn: str) -> bool:
    """Has the hot standby (``conn``) replayed the primary's WAL up to ``lsn``?

    What the sync reads on a standby is what was replayed, so this, not the
    slot, tells when a streaming ingres holds everything the primary had at ``lsn``.
    """
    return replay(conn, lsn)["replayed"]


class NotReplayed(TalerOpsError):
    """The standby had not replayed the target position when the wait ended."""

    def __init__(self, message: str, position: Replay, waited: float) -> None:
        super().__init__(message)
        self.position = position
        self.waited = waited


def wait_replayed(conn: psycopg.Connection[Any], lsn: str, timeout: float,
                  interval: float = 0.2) -> tuple[Replay, float]:
    """Wait until the hot standby (``conn``) has replayed the WAL up to ``lsn``.

    Returns the last look and the seconds waited.  A server not in recovery is
    refused (UsageError: it replays nothing, so waiting would only time out);
    NotReplayed when ``timeout`` seconds pass first.  A standby announces its replay
    progress to nobody but its primary, so polling its functions is the only way.
    """
    started = time.monotonic()
    while True:
        position = replay(conn, lsn)
        waited = round(time.monotonic() - started, 2)
        if not position["in_recovery"]:
            raise UsageError(
                f"{describe(conn.info.dsn)} is not a hot standby (pg_is_in_recovery() is false: "
                "a primary, or a standby that was promoted), so it replays no WAL; give the "
                "streaming ingres copy's connection")
        if position["replayed"]:
            return position, waited
        if waited >= timeout:
            raise NotReplayed(_not_replayed(position, waited), position, waited)
        time.sleep(interval)


def _not_replayed(position: Replay, waited: float) -> str:
    head = (f"the standby replayed only up to {position['replayed_lsn']} of "
            f"{position['target_lsn']} after {waited:.0f} s")
    if position["paused"]:
        return head + ": its WAL replay is paused (SELECT pg_wal_replay_resume() on it resumes it)"
    return head + (f" (received up to {position['received_lsn']}): is its WAL receiver streaming "
                   "and replay not held back by a conflict? (taler-ops status on the auditor tells)")
