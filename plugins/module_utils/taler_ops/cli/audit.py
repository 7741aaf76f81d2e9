"""``taler-ops audit -c CONF [-t] [-i] [--report FILE]``.

Exit codes: 0 when the audit ran, whatever it found (findings are results);
1 when the audit itself failed or another audit holds the auditor database;
2 for bad arguments, including ``-i`` against a safe copy; 5 when a database
is unreachable or its schema is not current; 6 for configuration errors.
"""

import argparse
import json
import logging
import os
import signal
import sys
import tempfile
from collections.abc import Mapping
from types import FrameType
from typing import Any, TypeVar

import psycopg

from .. import audit, config
from ..crypto.context import SignatureContext
from ..errors import TalerOpsError
from .args import Subparsers

T = TypeVar("T")

log = logging.getLogger(__name__)


def _write_report(path: str, report: Mapping[str, Any]) -> None:
    if path == "-":
        print(json.dumps(report, indent=2, sort_keys=True))
        return
    directory = os.path.dirname(os.path.abspath(path))
    try:
        fd, tmp = tempfile.mkstemp(prefix=".audit-report-", dir=directory)
        with os.fdopen(fd, "w") as fh:
            json.dump(report, fh, indent=2, sort_keys=True)
            fh.write("\n")
        os.replace(tmp, path)
    except OSError as exc:
        raise TalerOpsError(f"cannot write the report to {path}: {exc}") from None


def _handle(args: argparse.Namespace) -> int:
    cfg = config.load(args.config, project="taler-auditor")
    exchange_uri = config.exchangedb_uri(cfg)
    auditor_uri = config.auditordb_uri(cfg)
    currency = cfg.get_string("exchange", "CURRENCY", required=False) or None
    signatures = signature_context(cfg)
    auditor_pub = auditor_public_key(cfg)
    stop = {"now": False}

    def on_signal(signum: int, _frame: FrameType | None) -> None:
        log.info("signal %s: stopping after the current check", signum)
        stop["now"] = True

    def on_report(report: audit.RunReport) -> None:
        if args.report:
            _write_report(args.report, report)
        if args.report != "-" and (args.test or report["progress_moved"] or report["findings"]):
            print(audit.summary(report), flush=True)

    try:
        with audit.Audit(exchange_uri, auditor_uri, internal=args.internal,
                         currency=currency, settle=args.settle,
                         signatures=signatures, auditor_pub=auditor_pub) as runner:
            if args.test:
                on_report(runner.run_once(now_us=args.now))
                return 0
            signal.signal(signal.SIGTERM, on_signal)
            signal.signal(signal.SIGINT, on_signal)
            audit.run_until_stopped(runner, lambda: stop["now"], on_report,
                                    poll_max=args.poll_max, now_us=args.now)
            return 0
    except psycopg.Error as exc:
        raise audit.database_error(exc) from None


def _or_say_skipped(value: T | None, what: str, cfg: config.TalerConfig) -> T | None:
    """``value``; when it is None, say once on stderr which check that skips and why."""
    if value is None:
        print(f"{what} is not set in {cfg.describe()}", file=sys.stderr, flush=True)
    return value


def auditor_public_key(cfg: config.TalerConfig) -> bytes | None:
    """audit.auditor_public_key, saying once on stderr when its report is skipped."""
    return _or_say_skipped(audit.auditor_public_key(cfg), "denominations without auditor "
                           "signatures not checked: [auditor] PUBLIC_KEY", cfg)


def signature_context(cfg: config.TalerConfig) -> SignatureContext | None:
    """audit.signature_context, saying once on stderr when the check is skipped."""
    return _or_say_skipped(audit.signature_context(cfg),
                           "signatures check skipped: [exchange] MASTER_PUBLIC_KEY", cfg)


def add_parser(sub: Subparsers) -> None:
    p = sub.add_parser(
        "audit", help="audit the exchange database incrementally (findings, balances, report)",
        description="Check the exchange database (normally the safe copy) incrementally and "
                    "store findings, running balances and progress in the auditor database. "
                    "Exit 0 whenever the audit ran, whatever it found.")
    p.add_argument("-c", "--config", metavar="FILE",
                   help="configuration with [exchangedb-postgres] CONFIG (the exchange database "
                        "to read) and [auditordb-postgres] CONFIG (the auditor database to "
                        "write); [exchange] CURRENCY, if set, formats amounts (default: Taler's "
                        "taler-auditor.conf search, as the auditor helpers)")
    p.add_argument("-t", "--test", action="store_true",
                   help="run once and exit (without it: keep auditing new data until SIGTERM)")
    p.add_argument("-i", "--internal", action="store_true",
                   help="also compare the exchange's mutable summaries (reserve balances, coin "
                        "remaining values, deposit done flags); only on the exchange primary, "
                        "refused (exit 2) on a safe copy")
    p.add_argument("--report", metavar="FILE",
                   help="write the JSON report of each run to FILE ('-': JSON on stdout "
                        "instead of the summary)")
    p.add_argument("--poll-max", type=float, default=10.0, metavar="SECONDS",
                   help="longest wait between polls for new data without -t (default 10)")
    p.add_argument("--settle", type=float, default=0.0, metavar="SECONDS",
                   help="on a live primary or ingres copy: audit only rows whose serial was "
                        "handed out SECONDS before the run's snapshot, so a transaction still "
                        "in flight cannot commit a row below the progress points later "
                        "(default 0; a safe copy is always cut at the last complete sync pass)")
    p.add_argument("--now", type=int, metavar="MICROSECONDS",
                   help="audit as if the clock read this (µs since the epoch); for replaying "
                        "and tests — deadlines and expirations are judged against it")
    p.set_defaults(handler=_handle)
