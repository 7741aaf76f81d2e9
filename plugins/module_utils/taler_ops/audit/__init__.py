"""The audit: incremental checks of an exchange database, results in the auditor database.

One run reads the exchange database in a single REPEATABLE READ READ ONLY
snapshot and runs the checks one after the other.  Each check reads its own
progress points ("next serial to process", as Taler's helpers), examines only
rows at or above them, and commits its findings, running balances, per-reserve
or per-coin state and its moved progress points in one auditor transaction.
The two databases may be different (even on different servers): nothing on
the exchange side is written, so a crash (kill -9) at any point leaves each
check either wholly done or not done, and the next run redoes exactly the
missing increment — no finding twice, no row skipped.

Checks: reserves (R1-R3), coins (C1-C3), aggregation (A1, A2) and, with
``internal``, the comparisons against the primary's mutable summaries
(R4, C4, A3), which are refused on a safe copy (exit 2).

The auditor database is Taler's auditor schema, built from Taler's files or by
the model (identical): findings go to Taler's report tables (common.KINDS),
progress and balances to auditor_progress / auditor_balances with Taler's keys,
per-reserve and per-denomination state to auditor_reserves /
auditor_denomination_pending; per-coin state, which Taler has no table for, to
taler_ops.coins.  See docs/audit.md.

What a run may read: on a safe copy, each table up to the cut of the last
complete sync pass (sync_watermarks.complete_serial); elsewhere up to the
snapshot, or with ``settle`` up to maxima read that many seconds before it
(serials are handed out before commit).  See docs/audit.md.

A session-level advisory lock on the auditor database keeps two audits from
working on the same progress points at once.
"""

from __future__ import annotations

import contextlib
import datetime
import time
from collections.abc import Callable
from types import TracebackType
from typing import TYPE_CHECKING, Any, NotRequired, Protocol, TypedDict

import psycopg
from psycopg import IsolationLevel, sql

from . import aggregation, coins, deposits, history, purses, reserves
# Aliased: ``internal`` and ``signatures`` are also the names of Audit's options.
from . import internal as internal_checks
from . import signatures as signature_checks
from ..schema import registry
from .common import KINDS, AmountJSON, Check, Conn, fmt, num, units
from .. import locks
from ..db import connect, describe
from ..schema.state import (AUDITOR_WHAT, EXCHANGE_WHAT, assert_auditor_current,
                            assert_exchange_current, auditor_flavour, read_setup)
from ..errors import DatabaseNotReady, TalerOpsError, UsageError

if TYPE_CHECKING:
    from ..config import TalerConfig
    from ..crypto.context import SignatureContext


class CheckModule(Protocol):
    """A check: a module with its name and ``run(check)``, which fills the Check."""
    NAME: str

    def run(self, check: Check) -> None: ...


CHECKS: tuple[CheckModule, ...] = (reserves, coins, aggregation, purses, deposits,
                                   signature_checks)


class CheckReport(TypedDict):
    progress_before: dict[str, int]
    progress_after: dict[str, int]
    rows_examined: dict[str, int]
    new_findings: int
    skipped: str | None


class RunReport(TypedDict):
    """One run's report (``--report``, the Ansible module's result)."""
    exchange: str
    auditor: str
    auditor_flavour: str
    role: str
    internal: bool
    dry_run: bool
    now: int
    bounded_by: str
    currency: str | None
    checks: dict[str, CheckReport]
    rows_examined: int
    progress_moved: bool
    findings: list[dict[str, Any]]      # common.report_entry: kind, tables, serial, details
    new_findings_by_kind: dict[str, int]
    open_findings_by_kind: dict[str, int]
    balances: dict[str, str | AmountJSON]
    # added once the run is over
    seconds: NotRequired[float]
    complete: NotRequired[bool]


def current_time_us() -> int:
    return int(time.time() * 1_000_000)


class Audit:
    """An open pair of connections; ``run_once`` may be called repeatedly."""

    def __init__(self, exchange_uri: str, auditor_uri: str, internal: bool = False,
                 currency: str | None = None, settle: float = 0.0,
                 signatures: SignatureContext | None = None,
                 auditor_pub: bytes | None = None) -> None:
        self.internal = internal
        # [auditor] PUBLIC_KEY (32 bytes) for the denominations-without-signatures
        # report of the coins check (None: skipped)
        self.auditor_pub = auditor_pub
        # crypto.context.SignatureContext for the signatures check (None: skipped)
        self.signatures = signatures
        self.settle = settle
        self.currency = currency
        self.exchange = describe(exchange_uri)
        self.auditor = describe(auditor_uri)
        self.ex: Conn = connect(exchange_uri, EXCHANGE_WHAT)
        try:
            self.aud: Conn = connect(auditor_uri, AUDITOR_WHAT, autocommit=True)
        except TalerOpsError:
            self.ex.close()
            raise
        try:
            self._prepare()
        except BaseException:
            self.close()
            raise

    def _prepare(self) -> None:
        for conn in (self.ex, self.aud):
            # Only schema-qualified names are used; nothing added to other schemas
            # of a database can shadow the functions the checks call.
            conn.execute("SET search_path TO pg_catalog, pg_temp")
        self.ex.commit()
        assert_exchange_current(self.ex)
        setup = read_setup(self.ex)
        self.ex.rollback()
        if setup is None:
            raise DatabaseNotReady("the exchange database has no taler_ops.database_setup; "
                                   "run exchange-dbinit first")
        self.role: str = setup[0]
        if self.internal and self.role == "safe-copy":
            raise UsageError(
                "-i (internal audit) is refused on a safe copy: it compares the exchange's "
                "mutable summary columns, which the sync never copies (they keep their "
                "defaults there); run it against the exchange primary")
        self.ex.isolation_level = IsolationLevel.REPEATABLE_READ
        self.ex.read_only = True
        assert_auditor_current(self.aud)
        # Both write the same Taler tables; the report says which one this is.
        flavour = auditor_flavour(self.aud)
        assert flavour is not None, "assert_auditor_current found the auditor schema"
        self.auditor_flavour: str = flavour
        if not locks.try_hold(self.aud, locks.AUDIT):
            raise TalerOpsError("another audit is running against this auditor database "
                                f"({self.auditor}); refusing to run a second one")

    def close(self) -> None:
        for conn in (getattr(self, "ex", None), getattr(self, "aud", None)):
            if conn is not None and not conn.closed:
                conn.close()

    def __enter__(self) -> Audit:
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.close()

    def run_once(self, now_us: int | None = None, dry_run: bool = False,
                 stop: Callable[[], bool] | None = None) -> RunReport:
        """One incremental run of every check; returns the report as a dict.

        ``dry_run`` runs everything in one auditor transaction and rolls it back
        (Ansible's check mode).  ``stop()`` is asked between checks.
        """
        now = current_time_us() if now_us is None else int(now_us)
        mods = CHECKS + ((internal_checks,) if self.internal else ())
        started = time.monotonic()
        started_at = datetime.datetime.now(datetime.timezone.utc)
        done: list[Check] = []
        outer: contextlib.AbstractContextManager[Any] = (
            self.aud.transaction(force_rollback=True) if dry_run else contextlib.nullcontext())
        try:
            bounds = sync_cut(self.ex, self.role)
            if bounds is None and self.settle > 0:
                bounds = self._settled_maxima()
            with outer:
                for i, mod in enumerate(mods):
                    if stop is not None and stop():
                        break
                    check = Check(mod.NAME, self.ex, self.aud, now, self.currency, bounds)
                    check.signatures = self.signatures
                    check.auditor_pub = self.auditor_pub
                    with self.aud.transaction():
                        mod.run(check)
                        check.write()
                        if i == len(mods) - 1:
                            # With the last check's results: a crash keeps both or neither.
                            # A run stopped earlier is not recorded (the next one is).
                            history.record(
                                self.aud, started_at,
                                sum(sum(c.examined.values()) for c in done + [check]),
                                history.sync_seen(self.ex) if self.role == "safe-copy"
                                else (None, None))
                    done.append(check)
                report = self._report(done, now, dry_run)
        finally:
            if not self.ex.closed:
                self.ex.rollback()
        report["seconds"] = round(time.monotonic() - started, 3)
        report["complete"] = len(done) == len(mods)
        return report

    def _settled_maxima(self) -> dict[str, int]:
        """Serials handed out before commit: 101 may be visible while 100 is in flight.

        Read every table's largest serial, wait ``settle`` seconds (longer than
        any exchange transaction lasts), then audit in a new snapshot only up
        to those maxima, so no row below a progress point can still appear.
        """
        maxima = table_maxima(self.ex)
        self.ex.rollback()
        time.sleep(self.settle)
        return maxima

    def _report(self, checks: list[Check], now: int, dry_run: bool) -> RunReport:
        findings = []
        for check in checks:
            findings.extend(check.report_findings())
        new_by_kind: dict[str, int] = {}
        for f in findings:
            new_by_kind[f["kind"]] = new_by_kind.get(f["kind"], 0) + 1
        return {
            "exchange": self.exchange,
            "auditor": self.auditor,
            "auditor_flavour": self.auditor_flavour,
            "role": self.role,
            "internal": self.internal,
            "dry_run": dry_run,
            "now": now,
            "bounded_by": ("sync cut" if self.role == "safe-copy" else
                           f"maxima settled for {self.settle} s" if self.settle > 0
                           else "snapshot"),
            "currency": self.currency,
            "checks": {c.name: {"progress_before": c.progress_before,
                                "progress_after": c.progress,
                                "rows_examined": c.examined,
                                "new_findings": len(c.findings),
                                "skipped": c.skipped} for c in checks},
            "rows_examined": sum(sum(c.examined.values()) for c in checks),
            "progress_moved": any(c.moved for c in checks),
            "findings": findings,
            "new_findings_by_kind": dict(sorted(new_by_kind.items())),
            "open_findings_by_kind": open_findings_by_kind(self.aud),
            "balances": {k: fmt(v, self.currency) for k, v in balances(self.aud).items()},
        }


def signature_context(cfg: TalerConfig) -> SignatureContext | None:
    """The signatures check's SignatureContext from the Taler configuration, or None
    when [exchange] MASTER_PUBLIC_KEY is not set (the check is then skipped and its
    progress points stay); a malformed key or currency is a ConfigError (exit 6)."""
    from ..crypto.context import SignatureContext
    if not cfg.get_string("exchange", "MASTER_PUBLIC_KEY", required=False):
        return None
    return SignatureContext.from_config(cfg)


def auditor_public_key(cfg: TalerConfig) -> bytes | None:
    """``[auditor] PUBLIC_KEY`` (Crockford base32) as 32 bytes, or None when not set;
    a malformed key is a ConfigError (exit 6)."""
    from ..crypto import crockford
    from ..errors import ConfigError
    text = cfg.get_string("auditor", "PUBLIC_KEY", required=False)
    if not text:
        return None
    try:
        return crockford.decode(text.strip(), 32)
    except ValueError as exc:
        raise ConfigError(f"{cfg.describe()}: [auditor] PUBLIC_KEY: {exc}") from None


def sync_cut(ex: Conn, role: str) -> dict[str, int] | None:
    """Per-table upper bounds for a safe copy: the last complete sync pass; else None.

    The sync commits table by table, in copy order, so a snapshot taken in the
    middle of a pass can hold a withdrawal without the merge that funded it, or
    a wire_out without its aggregation_tracking rows: not a consistent state.
    taler_ops.sync_watermarks.complete_serial is the serial up to which the last
    *complete* pass copied each table (set for every table in one transaction
    at the end of a pass), so on a safe copy the audit examines rows up to it
    only; rows of a pass still running wait for the next run.  Other roles are
    read up to their snapshot.
    """
    if role != "safe-copy":
        return None
    if not ex.execute(
            "SELECT 1 FROM information_schema.columns WHERE table_schema = 'taler_ops' "
            "AND table_name = 'sync_watermarks' AND column_name = 'complete_serial'").fetchone():
        # Only a safe copy made by a pre-release exchange-0001 lacks it.
        raise DatabaseNotReady(
            "the safe copy's taler_ops.sync_watermarks has no complete_serial column (created "
            "by an older pre-release taler-ops); recreate the safe copy with exchange-dbinit")
    return {name: serial for name, serial in ex.execute(
        "SELECT table_name, complete_serial FROM taler_ops.sync_watermarks")}


def table_maxima(ex: Conn) -> dict[str, int]:
    query = sql.SQL(" UNION ALL ").join(
        sql.SQL("SELECT {}, max({}) FROM {}").format(
            sql.Literal(e.name), sql.Identifier(e.serial), sql.Identifier("exchange", e.name))
        for e in registry.REPLICATED)
    return {name: top or 0 for name, top in ex.execute(query)}


def balances(aud: Conn) -> dict[str, int]:
    return {k: units(v) for k, v in aud.execute(
        f"SELECT balance_key, {num('balance_value')} FROM auditor.auditor_balances "
        "ORDER BY balance_key")}


def open_findings_by_kind(aud: Conn) -> dict[str, int]:
    """Unsuppressed rows of Taler's report tables, by the kind of finding they hold."""
    query = sql.SQL(" UNION ALL ").join(
        sql.SQL("SELECT {}, count(*) FROM {} WHERE NOT suppressed AND ({})").format(
            sql.Literal(kind), sql.Identifier("auditor", k.table), sql.SQL(k.where))
        for kind, k in KINDS.items())
    return {kind: n for kind, n in aud.execute(query) if n}


def run(exchange_uri: str, auditor_uri: str, internal: bool = False, currency: str | None = None,
        now_us: int | None = None, dry_run: bool = False, settle: float = 0.0,
        signatures: SignatureContext | None = None, auditor_pub: bytes | None = None) -> RunReport:
    """One run (``-t``); returns the report dict."""
    with Audit(exchange_uri, auditor_uri, internal=internal, currency=currency,
               settle=settle, signatures=signatures, auditor_pub=auditor_pub) as audit:
        return audit.run_once(now_us=now_us, dry_run=dry_run)


def run_until_stopped(audit: Audit, stop: Callable[[], bool],
                      on_report: Callable[[RunReport], None], poll_min: float = 0.5,
                      poll_max: float = 10.0, now_us: int | None = None) -> None:
    """Run, then wait for new data by polling, until ``stop()`` is true.

    Polling rather than LISTEN: the exchange tables are often a replicated copy,
    where triggers (and so notifications) do not fire.  The delay doubles while
    nothing new arrives, up to ``poll_max`` seconds, and ``stop`` is asked
    every tenth of a second, so SIGTERM ends the wait at once.
    """
    delay = poll_min
    while not stop():
        report = audit.run_once(now_us=now_us, stop=stop)
        on_report(report)
        if report["progress_moved"] or report["findings"]:
            delay = poll_min
        else:
            delay = min(delay * 2, poll_max)
        deadline = time.monotonic() + delay
        while not stop() and time.monotonic() < deadline:
            time.sleep(min(0.1, max(deadline - time.monotonic(), 0)))


def summary(report: RunReport) -> str:
    """A short human summary of one run's report."""
    lines = [f"audit of the exchange database ({report['exchange']}, {report['role']})"
             + (", internal checks" if report["internal"] else "")
             + (" [dry run, nothing stored]" if report["dry_run"] else "")]
    for name, c in report["checks"].items():
        lines.append(f"  {name:<12} {sum(c['rows_examined'].values()):>8} rows examined, "
                     f"{c['new_findings']} new finding(s)")
    if not report["complete"]:
        lines.append("  (stopped before every check ran)")
    new = report["new_findings_by_kind"]
    lines.append("new findings: " + (", ".join(f"{k} {n}" for k, n in new.items()) or "none"))
    stored = report["open_findings_by_kind"]
    lines.append("open findings (all runs): "
                 + (", ".join(f"{k} {n}" for k, n in stored.items()) or "none"))
    shown = {k: v for k, v in report["balances"].items() if v not in ("0", {"val": 0, "frac": 0})
             and not (isinstance(v, str) and v.endswith(":0"))}
    if shown:
        lines.append("balances: " + ", ".join(
            f"{k} {v if isinstance(v, str) else fmt_plain(v)}" for k, v in shown.items()))
    return "\n".join(lines)


def fmt_plain(value: AmountJSON) -> str:
    frac = f"{value['frac']:08d}".rstrip("0")
    return f"{value['val']}" + (f".{frac}" if frac else "")


def database_error(exc: psycopg.Error) -> TalerOpsError:
    """A psycopg error during a run, as the audit's own failure (exit 1)."""
    reason = " ".join(str(exc).split())
    if isinstance(exc, psycopg.OperationalError):
        return DatabaseNotReady(f"lost a database connection during the audit: {reason}")
    return TalerOpsError(f"the audit failed: {reason}")
