"""``taler-ops status``: replication, sync and audit health; exit 0 healthy, 1 not."""

import argparse
import json
import sys
from collections.abc import Mapping
from typing import Any

from .. import config
from ..monitor import status
from ..errors import UsageError
from ..ini import Project
from .args import Subparsers


def _uri(path: str | None, section: str,
         project: Project = "taler-auditor") -> str | None:
    """Explicit files only (status has four); loaded over the auditor's defaults as
    taler-auditor-sync loads its -s/-d, the publisher's over the exchange's."""
    return config.database_uri(config.load(path, project=project), section) if path else None


def _table(report: Mapping[str, Any]) -> str:
    lines = []
    for part in ("publisher", "ingres", "safe_copy"):
        if part in report:
            inst = report[part]["instance"]
            state = f"up (PostgreSQL {inst['version']})" if inst["up"] else "DOWN"
            mode = report[part].get("mode")
            lines.append(f"{part:<10} {state}" + (f", {mode} replication" if mode else ""))
    for slot in report.get("publisher", {}).get("slots", []):
        lines.append(f"  slot {slot['slot_name']}: {'active' if slot['active'] else 'inactive'}, "
                     f"wal {slot['wal_status']}, lag {slot['lag_bytes']} B, "
                     f"retained {slot['retained_bytes']} B")
    for sub in report.get("ingres", {}).get("subscriptions", []):
        age = sub.get("last_msg_age_seconds")
        lines.append(f"  subscription {sub['name']}: "
                     f"{'enabled' if sub['enabled'] else 'DISABLED'}, worker "
                     f"{sub['worker_pid'] or 'none'}, apply errors {sub['apply_error_count']}, "
                     f"last message {'never' if age is None else f'{age:.0f} s ago'}")
    rx = report.get("ingres", {}).get("standby")
    if rx:
        age = rx.get("last_msg_age_seconds")
        receiver = rx["status"] or ("running" if rx["receiver_pid"] else "NONE")
        lines.append(f"  standby (streaming): receiver {receiver}, "
                     f"slot {rx['slot_name'] or '?'}, replay lag {rx['replay_lag_bytes']} B, "
                     f"last message {'?' if age is None else f'{age:.0f} s ago'}"
                     + (", replay PAUSED" if rx["replay_paused"] else ""))
    sync = report.get("sync")
    if sync and "tables" in sync:
        state = "HALTED" if sync.get("halted") else "running"
        lines.append(f"sync       {state}, lag {sync.get('lag_rows', '?')} rows, "
                     f"{sync.get('lag_seconds', 0):.0f} s, {sync.get('open_holes', 0)} open hole(s)")
        lines.append(f"  {'table':<28} {'watermark':>12} {'ingres max':>12} {'lag rows':>10} "
                     f"{'holes':>6}")
        for table, row in sync["tables"].items():
            if row["watermark"] or row.get("source_max"):
                lines.append(f"  {table:<28} {row['watermark']:>12} "
                             f"{row.get('source_max', '?'):>12} {row.get('lag_rows', '?'):>10} "
                             f"{row.get('open_holes', 0):>6}")
    audit = report.get("audit", {})
    if "progress" in audit:
        total = sum(audit["findings"].values())
        lines.append(f"audit      {len(audit['progress'])} progress points, {total} findings")
        for kind, count in sorted(audit["findings"].items()):
            if count:
                lines.append(f"  {kind}: {count}")
    lines.append("healthy" if report["healthy"] else "UNHEALTHY:")
    lines += [f"  - {p}" for p in report["problems"]]
    return "\n".join(lines)


def _run(args: argparse.Namespace) -> int:
    if not any((args.publisher, args.source, args.destination, args.auditor)):
        raise UsageError("name at least one of -p, -s, -d, -a")
    if args.destination and not args.source:
        raise UsageError("-d (safe copy) needs -s (ingres) to measure the sync's lag")
    report = status.collect(
        publisher_uri=_uri(args.publisher, "exchangedb-postgres", "taler-exchange"),
        slot_name=args.slot,
        ingres_uri=_uri(args.source, "exchangedb-postgres"),
        safe_uri=_uri(args.destination, "exchangedb-postgres"),
        auditor_uri=_uri(args.auditor, "auditordb-postgres"),
        max_lag_rows=args.max_lag_rows, max_lag_seconds=args.max_lag_seconds)
    if args.metrics_textfile:
        from ..monitor import metrics
        metrics.write_textfile(report, args.metrics_textfile)
    if args.json or (args.json is None and not sys.stdout.isatty()):
        print(json.dumps(report, indent=2, sort_keys=True, default=str))
    else:
        print(_table(report))
    return 0 if report["healthy"] else 1


def add_parser(sub: Subparsers) -> None:
    p = sub.add_parser("status", help="health of replication, sync and audit (exit 1 if unhealthy)")
    p.add_argument("-p", "--publisher", metavar="CONF",
                   help="exchange primary: [exchangedb-postgres] CONFIG (slots, WAL lag)")
    p.add_argument("--slot", help="only this replication slot on the publisher")
    p.add_argument("-s", "--source", metavar="CONF",
                   help="ingres copy (subscription state, or WAL receiver of a standby)")
    p.add_argument("-d", "--destination", metavar="CONF", help="safe copy (sync progress)")
    p.add_argument("-a", "--auditor", metavar="CONF",
                   help="auditor database: [auditordb-postgres] CONFIG (audit progress)")
    p.add_argument("--max-lag-rows", type=int, metavar="N", help="unhealthy above N rows of lag")
    p.add_argument("--max-lag-seconds", type=float, metavar="S",
                   help="unhealthy when rows waited longer than S seconds")
    p.add_argument("--metrics-textfile", metavar="FILE",
                   help="also write Prometheus metrics to FILE (node_exporter textfile collector)")
    fmt = p.add_mutually_exclusive_group()
    fmt.add_argument("--json", dest="json", action="store_true", default=None,
                     help="JSON output (default when stdout is not a terminal)")
    fmt.add_argument("--table", dest="json", action="store_false", help="human table output")
    p.set_defaults(handler=_run)
