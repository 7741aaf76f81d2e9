"""``taler-ops exchange-dbinit`` and ``taler-ops auditor-dbinit``."""

import argparse
import json
from collections.abc import Sequence

from .. import config
from ..schema import dbinit
from .args import Subparsers


def _print_result(args: argparse.Namespace,
                  result: dbinit.ExchangeResult | dbinit.AuditorResult, done: Sequence[str],
                  warnings: Sequence[str] = (), queued: int = 0) -> bool:
    """Print what dbinit did or, with --check, would do (``done``: what it did besides
    applying patches; ``queued``: Taler's table actions not yet run).  True when the
    caller may add more (neither --json nor --check)."""
    if getattr(args, "json", False):
        print(json.dumps(result, indent=2, sort_keys=True))
        return False
    for warning in warnings:
        print(f"warning: {warning}")
    if args.check:
        if queued:
            print(f"queued table actions not yet run: {queued}")
        if result["pending"]:
            print("pending patches: " + " ".join(result["pending"]))
        else:
            print("database is current: no pending patches")
        return False
    for line in done:
        print(line)
    for name in result["applied"]:
        print(f"applied {name}")
    if not result["applied"]:
        print("database is current: nothing to apply")
    return True


def _exchange(args: argparse.Namespace) -> int:
    cfg = config.load(args.config, project="taler-exchange")
    uri = config.exchangedb_uri(cfg)
    result = dbinit.exchange_dbinit(uri, check=args.check, reset=args.reset, run_gc=args.gc,
                                    partitions=args.partition, role=args.role,
                                    sql_dir=config.exchangedb_sql_dir(cfg))
    done = ["dropped the exchange schema and unregistered its patches"] if result["reset"] else []
    if _print_result(args, result, done, result.get("warnings", []),
                     result.get("unfinished_table_actions", 0)):
        gc_result = result["gc"]
        if gc_result:
            deleted = gc_result["deleted"]
            print(f"garbage collection ({gc_result['role']}): "
                  + (", ".join(f"{t} {n}" for t, n in sorted(deleted.items())) or "nothing to delete"))
    return 0


def _auditor(args: argparse.Namespace) -> int:
    cfg = config.load(args.config, project="taler-auditor")
    uri = config.auditordb_uri(cfg)
    result = dbinit.auditor_dbinit(uri, check=args.check, restart=args.restart, drop=args.reset,
                                   sql_dir=config.auditordb_sql_dir(cfg))
    done = []
    if result["dropped"]:
        done.append("dropped the auditor schema and unregistered its patches")
    if result["restarted"]:
        done.append("cleared audit progress, balances, findings and the run history (deposit "
                    "confirmations kept)")
    _print_result(args, result, done)
    return 0


def add_parser(sub: Subparsers) -> None:
    p = sub.add_parser("exchange-dbinit", help="create, upgrade, reset or GC an exchange database",
                       description="Apply every missing exchange patch, each in its own "
                                   "transaction. Idempotent.")
    p.add_argument("-c", "--config", metavar="FILE",
                   help="configuration with [exchangedb-postgres] CONFIG (default: Taler's "
                        "taler-exchange.conf search, as taler-exchange-dbinit)")
    p.add_argument("--check", action="store_true", help="list pending patches, change nothing")
    p.add_argument("-r", "--reset", action="store_true",
                   help="DANGEROUS: drop the exchange schema (all data) before creating it")
    p.add_argument("-g", "--gc", action="store_true", help="garbage-collect old data")
    p.add_argument("-P", "--partition", type=int, metavar="N",
                   help="hash-partition the large tables into N partitions (0: one default "
                        "partition); no foreign keys then. Fixed at creation.")
    p.add_argument("--role", choices=["primary", "ingres", "safe-copy"],
                   help="what this database is, recorded at creation (default primary); "
                        "GC and the sync read it")
    p.add_argument("--json", action="store_true", help="print the result as JSON")
    p.set_defaults(handler=_exchange)

    p = sub.add_parser("auditor-dbinit", help="create, upgrade, restart or drop the auditor database")
    p.add_argument("-c", "--config", metavar="FILE",
                   help="configuration with [auditordb-postgres] CONFIG (default: Taler's "
                        "taler-auditor.conf search, as taler-auditor-dbinit)")
    p.add_argument("--check", action="store_true", help="list pending patches, change nothing")
    p.add_argument("-r", "--restart", action="store_true",
                   help="DANGEROUS: clear audit progress, balances, findings and the "
                        "audit's run history (deposit confirmations are kept)")
    p.add_argument("-R", "--reset", action="store_true",
                   help="DANGEROUS: drop the auditor schema and everything in it")
    p.add_argument("--json", action="store_true", help="print the result as JSON")
    p.set_defaults(handler=_auditor)
