"""``taler-ops ingres-link``: keep the ingres subscription enabled through transport failures.

taler-ops ingres-link -c INGRES.conf [--once] [--interval S] [--state FILE] [--json]
                      [--subscription NAME] [--stable S] [--retry S] [--retry-max S]
                      [--max-strikes N] [--stuck-retry S] [--install-wakeup]
    Runs on the ingres host as the ingres instance's UNIX user; [exchangedb-postgres]
    CONFIG of INGRES.conf is a login that owns the subscription (PostgreSQL 15: a
    superuser).  See ingres/link.py for how transport failures and apply errors are told apart.
    Exit 0: stopped by SIGTERM/SIGINT, or (--once) no subscription stuck; 1 (--once):
    a subscription is stuck on an apply error; 5: the ingres is unreachable (--once);
    6: configuration.
"""

import argparse
import json
import signal
import threading
from types import FrameType

from .. import config
from ..ingres import link
from ..sync import wakeup
from .args import Subparsers, non_negative, positive_int


def _run(args: argparse.Namespace) -> int:
    uri = config.exchangedb_uri(config.load(args.config))
    if args.install_wakeup:
        from ..db import connect
        with connect(uri, link.WHAT, autocommit=True) as conn:
            tables, created = wakeup.install(conn)
        print(f"wake-up trigger on {tables} ingres table(s), {created} created")
        return 0
    stop = threading.Event()

    def handler(signum: int, frame: FrameType | None) -> None:
        stop.set()
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, handler)
    settings: link.Settings = {
        "interval": args.interval, "stable": args.stable, "retry": args.retry,
        "retry_max": args.retry_max, "max_strikes": args.max_strikes,
        "stuck_retry": args.stuck_retry}
    report = link.run(uri, stop=stop, once=args.once, subscription=args.subscription,
                      state_path=args.state, **settings)
    if args.json:
        print(json.dumps(report, indent=2, sort_keys=True))
    stuck = link.stuck(report)
    if args.once and stuck:
        print("stuck on an apply error (left disabled): " + ", ".join(stuck))
        return 1
    return 0


def add_parser(sub: Subparsers) -> None:
    d = link.DEFAULTS
    p = sub.add_parser(
        "ingres-link", help="re-enable an ingres subscription a transport failure disabled",
        description="Watch the ingres database's subscriptions: one PostgreSQL disabled "
                    "because its WAL stream was lost is enabled again; one that fails again "
                    "at the same transaction (an apply error) is left disabled and reported.")
    p.add_argument("-c", "--config", required=True, metavar="FILE",
                   help="[exchangedb-postgres] CONFIG: the ingres database, as the "
                        "subscription's owner")
    p.add_argument("--once", action="store_true", help="one round, then exit (for a timer)")
    p.add_argument("--interval", type=non_negative, default=d["interval"], metavar="S",
                   help=f"seconds between rounds (default {d['interval']:g})")
    p.add_argument("--state", metavar="FILE",
                   help="keep the keeper's state here (needed with --once; survives restarts)")
    p.add_argument("--subscription", metavar="NAME", help="only this subscription")
    p.add_argument("--stable", type=non_negative, default=d["stable"], metavar="S",
                   help="a re-enabled subscription counts as healed once its origin moved or "
                        f"after S seconds enabled (default {d['stable']:g})")
    p.add_argument("--retry", type=non_negative, default=d["retry"], metavar="S",
                   help="delay before the second re-enable, doubling after each quick "
                        f"failure (default {d['retry']:g})")
    p.add_argument("--retry-max", dest="retry_max", type=non_negative, default=d["retry_max"],
                   metavar="S", help=f"longest delay between re-enables (default {d['retry_max']:g})")
    p.add_argument("--max-strikes", dest="max_strikes", type=positive_int,
                   default=d["max_strikes"], metavar="N",
                   help="quick failures at the same origin position that make it an apply "
                        f"error (default {d['max_strikes']})")
    p.add_argument("--stuck-retry", dest="stuck_retry", type=non_negative, default=d["stuck_retry"],
                   metavar="S", help="try a stuck subscription again every S seconds; 0 never "
                                     f"(default {d['stuck_retry']:g})")
    p.add_argument("--install-wakeup", action="store_true",
                   help="install the sync's wake-up trigger on the ingres tables and exit")
    p.add_argument("--json", action="store_true", help="print the last state as JSON")
    p.set_defaults(handler=_run)
