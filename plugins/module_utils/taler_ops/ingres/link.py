"""The link keeper: an ingres subscription disabled by a transport failure comes back.

PostgreSQL 15 with ``disable_on_error = true`` disables a subscription on *any*
error raised inside the apply loop: a row the ingres copy refuses (constraint
violation, missing table), but also a lost WAL stream (link cut, exchange
restarted, walsender timeout).  Errors while *connecting* (publisher down, TLS
handshake refused) happen before the apply loop: the worker exits and the
launcher retries it every ``wal_retrieve_retry_interval`` on its own, the
subscription stays enabled.  pg_stat_subscription_stats counts both kinds of
in-loop error alike (``apply_error_count``, ``sync_error_count`` for table
synchronisation) and PostgreSQL 15 keeps no error text outside the server log.

So the keeper tells them apart by what PostgreSQL does, not by what it says:
an apply error is deterministic.  The apply worker restarts from the
subscription's replication origin (``pg_replication_origin_status.remote_lsn``,
the end of the last transaction it committed) and fails on the same remote
transaction again, before the origin moves.  A transport failure does not
repeat at the same place: once the link holds, transactions commit (the origin
moves) or the subscription simply stays enabled.

Per subscription, on each check (every ``interval`` seconds):

* *enabled*: its error count is the baseline.  A subscription the keeper
  re-enabled is *healed* once its origin moved or it stayed enabled for
  ``stable`` seconds; its strikes are cleared.
* *disabled, error count above the baseline*: PostgreSQL disabled it because of
  an error (the count rises before the subscription is disabled).  If the
  keeper had re-enabled it less than ``stable`` seconds before and the origin
  did not move since, that is a *strike*.  The keeper enables it again, at once
  after a first failure, then after ``retry * 2**(strikes-1)`` seconds (capped
  at ``retry_max``).  At ``max_strikes`` strikes in a row the failure is taken
  for an apply error: the subscription is left *stuck* (disabled), logged as an
  error, and tried once more only every ``stuck_retry`` seconds (0: never), so a
  misjudged flapping link still heals, while a real apply error just fails again
  at the same transaction.  ``taler-ops status`` and the metrics report the
  disabled subscription (and its error count) as before: the trusted side does
  not depend on the keeper's judgement.
* *disabled, error count not above the baseline*: an operator (or the upgrade
  playbook's drain step) disabled it; the keeper leaves it alone.  A
  subscription disabled before the keeper ever saw it enabled is left alone as
  well (unknown cause) unless ``--state`` remembers it.

The keeper needs a login that owns the subscription (a superuser on
PostgreSQL 15) and runs on the ingres host under the ingres instance's UNIX user.
It changes nothing but ``subenabled``; it never reads or writes replicated data.
"""

import json
import logging
import os
import threading
import time
from collections.abc import Callable
from typing import Any, Literal, NotRequired, TypedDict, Unpack

import psycopg
from psycopg import sql

from ..db import close_quietly, connect
from ..errors import DatabaseNotReady

log = logging.getLogger("taler_ops.link")

WHAT = "ingres database (link keeper)"


class Overrides(TypedDict, total=False):
    """The keeper's settings a caller may change (see the module docstring)."""
    interval: float
    stable: float
    retry: float
    retry_max: float
    max_strikes: int
    stuck_retry: float


class Settings(Overrides, total=True):
    pass


DEFAULTS: Settings = {"interval": 5.0, "stable": 60.0, "retry": 5.0, "retry_max": 300.0,
                      "max_strikes": 3, "stuck_retry": 3600.0}

# What the keeper last made of a subscription (logged as event=<phase>).
Phase = Literal["healthy", "healing", "probing", "waiting", "stuck", "unknown",
                "operator-disabled"]


class SubState(TypedDict):
    """The keeper's memory of one subscription (kept in --state across restarts)."""
    name: str
    phase: Phase | None
    errors: int | None            # the error count while last seen enabled: the baseline
    strikes: int
    retry_at: NotRequired[float | None]   # when to enable it again (None: never)
    enabled_at: NotRequired[float]
    origin_at_enable: NotRequired[int]
    failed_at: NotRequired[float]
    origin_at_failure: NotRequired[int]


class Report(TypedDict):
    checked_at: float
    checks: int
    subscriptions: dict[str, SubState]    # by subscription oid

_SUBS = """
SELECT s.oid, s.subname, s.subenabled, s.subdisableonerr,
       COALESCE(ss.apply_error_count, 0) + COALESCE(ss.sync_error_count, 0) AS errors,
       COALESCE(pg_wal_lsn_diff(o.remote_lsn, '0/0'), 0)::numeric::text AS origin,
       st.pid AS worker_pid
  FROM pg_catalog.pg_subscription s
  LEFT JOIN pg_catalog.pg_stat_subscription_stats ss ON ss.subid = s.oid
  LEFT JOIN pg_catalog.pg_replication_origin_status o ON o.external_id = 'pg_' || s.oid
  LEFT JOIN pg_catalog.pg_stat_subscription st ON st.subid = s.oid AND st.relid IS NULL
 WHERE s.subdbid = (SELECT oid FROM pg_catalog.pg_database WHERE datname = current_database())
 ORDER BY s.subname
"""


def read_subscriptions(conn: psycopg.Connection[Any]) -> list[dict[str, Any]]:
    cur = conn.cursor(row_factory=psycopg.rows.dict_row)
    rows = cur.execute(_SUBS).fetchall()
    for r in rows:
        r["origin"] = int(r["origin"])
        r["errors"] = int(r["errors"])
    return rows


class Keeper:
    """Decisions for the subscriptions of one ingres database; ``check()`` is one round."""

    def __init__(self, uri: str, subscription: str | None = None, state_path: str | None = None,
                 clock: Callable[[], float] = time.time, **settings: Unpack[Overrides]) -> None:
        unknown = set(settings) - set(DEFAULTS)
        if unknown:
            raise TypeError(f"unknown setting(s) {sorted(unknown)}")
        self.uri = uri
        self.only = subscription
        self.state_path = state_path
        self.clock = clock
        self.s: Settings = {**DEFAULTS, **settings}
        self.conn: psycopg.Connection[Any] | None = None
        self.subs: dict[str, SubState] = {}     # subscription oid (str) -> state
        self.checks = 0
        if state_path and os.path.exists(state_path):
            try:
                with open(state_path) as fh:
                    self.subs = dict(json.load(fh).get("subscriptions", {}))
            except (OSError, ValueError, AttributeError, TypeError) as exc:
                log.warning("event=state-ignored path=%s reason=%s", state_path, exc)

    # -- persistence and reporting ------------------------------------------------
    def report(self) -> Report:
        return {"checked_at": self.clock(), "checks": self.checks,
                "subscriptions": self.subs}

    def _save(self) -> None:
        if not self.state_path:
            return
        tmp = f"{self.state_path}.tmp"
        with open(tmp, "w") as fh:
            json.dump(self.report(), fh, indent=1, sort_keys=True)
        os.replace(tmp, self.state_path)

    def close(self) -> None:
        close_quietly(self.conn)
        self.conn = None

    # -- one round -------------------------------------------------------------------
    def check(self) -> Report:
        """Look at every subscription once, act where needed; returns the report."""
        if self.conn is None or self.conn.closed:
            self.conn = connect(self.uri, WHAT, autocommit=True, connect_timeout=5)
        conn = self.conn
        try:
            rows = read_subscriptions(conn)
            seen = set()
            for row in rows:
                if self.only and row["subname"] != self.only:
                    continue
                key = str(row["oid"])
                seen.add(key)
                st = self.subs.setdefault(key, {"name": row["subname"], "phase": None,
                                                "errors": None, "strikes": 0})
                st["name"] = row["subname"]
                self._one(conn, row, st)
            for key in set(self.subs) - seen:   # dropped subscriptions
                del self.subs[key]
        except psycopg.OperationalError:
            self.close()
            raise
        self.checks += 1
        self._save()
        return self.report()

    def _set_phase(self, st: SubState, phase: Phase, level: int = logging.INFO,
                   **detail: object) -> None:
        if st.get("phase") != phase:
            extra = " ".join(f"{k}={v}" for k, v in detail.items())
            log.log(level, "event=%s subscription=%s%s", phase, st["name"],
                    f" {extra}" if extra else "")
        st["phase"] = phase

    def _one(self, conn: psycopg.Connection[Any], row: dict[str, Any], st: SubState) -> None:
        now = self.clock()
        phase = st.get("phase")
        if row["subenabled"]:
            # A disabling error is counted (flushed) only after the subscription is
            # disabled, so the count seen while enabled is the baseline.
            st["errors"] = row["errors"]
            st.pop("retry_at", None)
            if phase in ("healing", "probing"):
                moved = row["origin"] > st.get("origin_at_enable", 0)
                if moved or now - st.get("enabled_at", now) >= self.s["stable"]:
                    st["strikes"] = 0
                    self._set_phase(st, "healthy", why="origin-moved" if moved else "stable")
            else:
                st["strikes"] = 0
                self._set_phase(st, "healthy")
            return

        if st["errors"] is None:
            # Never seen enabled: who disabled it is unknown; an operator enables it once.
            self._set_phase(st, "unknown", logging.WARNING,
                            note="disabled-before-the-keeper-saw-it-enabled:left-alone")
            return
        if row["errors"] > st["errors"]:
            # PostgreSQL disabled it because of an error: a new failure.
            quick = (phase in ("healing", "probing")
                     and now - st.get("enabled_at", 0) < self.s["stable"]
                     and row["origin"] <= st.get("origin_at_enable", -1))
            st["strikes"] = st["strikes"] + 1 if quick else 0
            if phase == "probing" and quick:
                st["strikes"] = max(st["strikes"], self.s["max_strikes"])
            st["errors"] = row["errors"]
            st["failed_at"] = now
            st["origin_at_failure"] = row["origin"]
            if st["strikes"] >= self.s["max_strikes"]:
                st["retry_at"] = (now + self.s["stuck_retry"]) if self.s["stuck_retry"] > 0 else None
                self._set_phase(st, "stuck", logging.ERROR, strikes=st["strikes"],
                                origin=row["origin"],
                                note="fails-again-at-the-same-transaction:apply-error,"
                                     "left-disabled(see-the-ingres-server-log)")
                return
            delay = 0.0 if st["strikes"] == 0 else min(
                self.s["retry_max"], self.s["retry"] * 2 ** (st["strikes"] - 1))
            st["retry_at"] = now + delay
            phase = "waiting"
            self._set_phase(st, phase, logging.WARNING, strikes=st["strikes"],
                            retry_in=f"{delay:g}s")
        if phase in ("waiting", "stuck"):
            retry_at = st.get("retry_at")
            if retry_at is not None and now >= retry_at:
                conn.execute(sql.SQL("ALTER SUBSCRIPTION {} ENABLE").format(
                    sql.Identifier(row["subname"])))
                st["enabled_at"] = now
                st["origin_at_enable"] = row["origin"]
                st.pop("retry_at", None)
                self._set_phase(st, "probing" if phase == "stuck" else "healing",
                                logging.WARNING, action="enabled", strikes=st["strikes"])
            return
        if phase in ("healing", "probing") and now - st.get("enabled_at", 0) < self.s["stable"]:
            return  # its error may not be counted yet: look again next round
        # Disabled without a new error: an operator's (or the drain step's) decision.
        self._set_phase(st, "operator-disabled")


def run(uri: str, stop: threading.Event | None = None, once: bool = False,
        on_check: Callable[[Report], object] | None = None, subscription: str | None = None,
        state_path: str | None = None, clock: Callable[[], float] = time.time,
        **settings: Unpack[Overrides]) -> Report | None:
    """Check until ``stop`` is set (or once); unreachable ingres is retried, never fatal."""
    stop = stop or threading.Event()
    keeper = Keeper(uri, subscription, state_path, clock, **settings)
    report = None
    try:
        while True:
            try:
                report = keeper.check()
                if on_check:
                    on_check(report)
            except (DatabaseNotReady, psycopg.OperationalError) as exc:
                if once:
                    raise
                log.warning("event=unreachable reason=%s", " ".join(str(exc).split()))
            except psycopg.Error as exc:    # e.g. a login that may not ALTER the subscription
                if once:
                    raise
                log.error("event=failed reason=%s", " ".join(str(exc).split()))
            if once or stop.wait(keeper.s["interval"]):
                return report
    finally:
        keeper.close()


def stuck(report: Report | None) -> list[str]:
    subs = report["subscriptions"] if report else {}
    return sorted(st["name"] for st in subs.values() if st.get("phase") == "stuck")
