"""How a sync stops: a halt (a rule broken), another sync holding the lock, a lost connection.

A halt is also a record: ``taler_ops.sync_halts`` on the safe copy keeps one
row per distinct halt (status and the report read it), cleared once the sync
copied past the offending serial.
"""

import logging
import re
from typing import Any, TypedDict

import psycopg

from ..errors import DatabaseNotReady, TalerOpsError
from ..schema import bookkeeping

log = logging.getLogger("taler_ops.sync")

_CONTROL = re.compile(r"[\x00-\x1f\x7f-\x9f]")
MAX_DETAIL = 400


def printable(text: str) -> str:
    """Details quote untrusted ingres values: keep the HALT message one plain line."""
    text = _CONTROL.sub(lambda m: f"\\x{ord(m.group()):02x}", str(text))
    return text if len(text) <= MAX_DETAIL else text[:MAX_DETAIL] + "..."


def one_line(exc: BaseException) -> str:
    return " ".join(str(exc).split())


class HaltRecord(TypedDict):
    """A halt as the CLI's --json and the Ansible module report it."""

    table: str
    serial: int | None
    rule: str
    detail: str
    message: str


class SyncHalt(TalerOpsError):
    """An invariant violation: the sync stopped without writing the offending batch."""

    def __init__(self, table: str, serial: int | None, rule: str, detail: str) -> None:
        detail = printable(detail)
        self.table, self.serial, self.rule, self.detail = table, serial, rule, detail
        super().__init__(f"HALT table={table} serial={'-' if serial is None else serial} "
                         f"rule={rule} {detail}")

    def as_dict(self) -> HaltRecord:
        return {"table": self.table, "serial": self.serial, "rule": self.rule,
                "detail": self.detail, "message": str(self)}


class SyncLocked(TalerOpsError):
    """Another sync holds the destination."""


class ConnectionLost(TalerOpsError):
    """A server went away; the daemon reconnects, a -t run fails with exit 5."""

    exit_code = DatabaseNotReady.exit_code


# Worth another pass: a hot-standby source cancels queries that conflict with
# recovery, and serialization failures or deadlocks clear up on a retry.
_TRANSIENT = (psycopg.errors.SerializationFailure, psycopg.errors.DeadlockDetected,
              psycopg.errors.QueryCanceled, psycopg.errors.AdminShutdown,
              psycopg.errors.CannotConnectNow)


def connection_problem(exc: BaseException) -> bool:
    return isinstance(exc, _TRANSIENT) or (
        isinstance(exc, (psycopg.OperationalError, psycopg.InterfaceError))
        and not isinstance(exc, psycopg.errors.QueryCanceled))


def record_halt(dst: psycopg.Connection[Any], halt: SyncHalt) -> None:
    """One row per distinct open halt, in a transaction of its own (the batch was rolled back).

    Failing to record it must not hide the halt itself: that is logged, and the
    caller raises the halt all the same.
    """
    try:
        with dst.transaction():
            known = dst.execute(
                f"SELECT 1 FROM {bookkeeping.HALTS} WHERE cleared_tsz IS NULL AND "
                "table_name = %s AND serial IS NOT DISTINCT FROM %s AND rule = %s",
                (halt.table, halt.serial, halt.rule)).fetchone()
            if not known:
                dst.execute(
                    f"INSERT INTO {bookkeeping.HALTS} (table_name, serial, rule, message) "
                    "VALUES (%s, %s, %s, %s)", (halt.table, halt.serial, halt.rule, str(halt)))
    except psycopg.Error as exc:
        log.error("could not record the halt in %s: %s", bookkeeping.HALTS, one_line(exc))


def clear_halts(dst: psycopg.Connection[Any], table: str, hi: int) -> None:
    """Inside a batch's transaction: the sync copied past these halts, they are over."""
    dst.execute(
        f"UPDATE {bookkeeping.HALTS} SET cleared_tsz = now() WHERE cleared_tsz IS NULL"
        " AND table_name = %s AND (serial IS NULL OR serial <= %s)", (table, hi))
