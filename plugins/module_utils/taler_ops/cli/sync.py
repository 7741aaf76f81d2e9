"""``taler-ops sync`` and ``taler-ops verify``.

sync:   taler-ops sync -s SRC.conf -d DST.conf [-t] [-b N] [--hole-horizon S] [--pidfile FILE]
        [--metrics-textfile FILE] [--max-delay S] [--no-wakeup]
        Exit 0: synchronized (-t) or stopped by SIGTERM/SIGINT; 1: HALT (an
        invariant violation, one ``HALT table=... serial=... rule=...`` line on
        stderr) or another sync holds the destination; 2: bad arguments;
        5: a database is unreachable (with -t) or not at the current patch
        level; 6: configuration.
verify: taler-ops verify -s SRC.conf -d DST.conf [--block N] [--json]
        Exit 0: no changed, suspiciously deleted or missing rows; 1: some found.
"""

import argparse
import json
import logging
import os
import signal
import sys
import threading
import time
from collections.abc import Mapping
from types import FrameType
from typing import Any, TextIO

import psycopg

from .. import config, sync
from ..sync import verify
from .args import Subparsers, positive_int
from ..errors import TalerOpsError, UsageError

log = logging.getLogger("taler_ops.sync")


def _uris(args: argparse.Namespace) -> tuple[str, str]:
    src, dst = os.path.realpath(args.source), os.path.realpath(args.destination)
    if src == dst:
        raise UsageError("source and destination configuration files must differ")
    # both files over the auditor's defaults, as taler-auditor-sync loads its -s and -d
    src_uri = config.exchangedb_uri(config.load(args.source, project="taler-auditor"))
    dst_uri = config.exchangedb_uri(config.load(args.destination, project="taler-auditor"))
    if src_uri == dst_uri:
        raise UsageError(f"{args.source} and {args.destination} name the same database "
                         "([exchangedb-postgres] CONFIG)")
    return src_uri, dst_uri


class _Progress:
    """A live line on a terminal; structured log lines otherwise."""

    def __init__(self, stream: TextIO = sys.stderr) -> None:
        self.stream = stream
        self.tty = stream.isatty()

    def __call__(self, ev: Mapping[str, Any]) -> None:
        rate = ev["rows_per_s"] or 0
        if self.tty:
            self.stream.write(f"\r{ev['table']:<26} {ev['rows']:>10} rows {rate:>10.0f} rows/s "
                              f"(serial {ev['watermark']}/{ev['source_max']})\033[K")
            self.stream.flush()
        else:
            log.info("event=batch table=%s rows=%d watermark=%d source_max=%d rows_per_s=%.0f",
                     ev["table"], ev["rows"], ev["watermark"], ev["source_max"], rate)

    def end_line(self) -> None:
        if self.tty:
            self.stream.write("\r\033[K")
            self.stream.flush()


def _print_pass(result: Mapping[str, Any], progress: _Progress, as_json: bool) -> None:
    progress.end_line()
    if as_json:
        return
    for name, info in result["tables"].items():
        if info["copied"]:
            print(f"event=table table={name} copied={info['copied']} "
                  f"watermark={info['watermark']}", flush=True)


def _stop_on_signals(stop: threading.Event) -> None:
    def handler(signum: int, frame: FrameType | None) -> None:
        log.warning("event=signal signal=%s: finishing the current batch", signum)
        stop.set()
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, handler)


def _write_pidfile(path: str) -> None:
    with open(path, "w") as fh:
        fh.write(f"{os.getpid()}\n")


def _sync(args: argparse.Namespace) -> int:
    if args.hole_horizon < 0:
        raise UsageError("--hole-horizon takes a number of seconds >= 0")
    if not args.max_delay > 0:
        raise UsageError("--max-delay takes a number of seconds > 0")
    src_uri, dst_uri = _uris(args)
    stop = threading.Event()
    _stop_on_signals(stop)
    progress = _Progress()
    if args.pidfile:
        _write_pidfile(args.pidfile)
    try:
        if args.terminate or args.dry_run:
            result = sync.sync_once(src_uri, dst_uri, args.batch, dry_run=args.dry_run,
                                    progress=progress, stop=stop,
                                    hole_horizon=args.hole_horizon)
            _print_pass(result, progress, args.json)
            if args.json:
                print(json.dumps(result, indent=2, sort_keys=True))
            else:
                verb = "would copy" if args.dry_run else "copied"
                state = "stopped" if result.get("stopped") else (
                    "dry run" if args.dry_run else "synchronized")
                holes = result.get("open_holes")
                print(f"{state}: {verb} {result['copied']} rows in {result['passes']} pass(es)"
                      + (f"; {holes} open hole(s) will be searched again by the next run"
                         if holes else ""))
            return 0
        export = _MetricsExporter(args.metrics_textfile, src_uri, dst_uri)

        def on_pass(result: Mapping[str, Any]) -> None:
            _print_pass(result, progress, args.json)
            export()

        totals = sync.run_daemon(src_uri, dst_uri, args.batch, progress=progress, stop=stop,
                                 on_pass=on_pass, hole_horizon=args.hole_horizon,
                                 max_delay=args.max_delay, wakeup=not args.no_wakeup)
        print(f"stopped: copied {totals['copied']} rows in {totals['passes']} pass(es)")
        return 0
    except sync.SyncHalt as halt:
        _MetricsExporter(args.metrics_textfile, src_uri, dst_uri)(force=True)
        progress.end_line()
        print(str(halt), file=sys.stderr)
        if args.json:
            print(json.dumps({"halt": halt.as_dict()}, indent=2, sort_keys=True))
        return halt.exit_code
    finally:
        if args.pidfile:
            try:
                os.unlink(args.pidfile)
            except OSError:
                pass


METRICS_INTERVAL = 15.0  # seconds between two metrics files; a pass can be much shorter


class _MetricsExporter:
    """Write status metrics for node_exporter's textfile collector, at most every 15 s.

    A failure to export is logged, never fatal: metrics must not stop the sync.
    """

    def __init__(self, path: str | None, src_uri: str, dst_uri: str) -> None:
        self.path, self.src_uri, self.dst_uri = path, src_uri, dst_uri
        self.last = float("-inf")

    def __call__(self, force: bool = False) -> None:
        path = self.path
        if not path or (not force and time.monotonic() - self.last < METRICS_INTERVAL):
            return
        self.last = time.monotonic()
        try:
            from ..monitor import metrics, status
            metrics.write_textfile(status.collect(ingres_uri=self.src_uri, safe_uri=self.dst_uri),
                                   path)
        except (ImportError, OSError, TalerOpsError, psycopg.Error) as exc:
            logging.getLogger(__name__).warning("metrics not written to %s: %s", path, exc)


def _verify(args: argparse.Namespace) -> int:
    src_uri, dst_uri = _uris(args)
    report = verify.verify(src_uri, dst_uri, block_size=args.block)
    if args.json:
        print(json.dumps(report, indent=2, sort_keys=True))
    else:
        for f in report["findings"]:
            print(f"{f['kind']} table={f['table']} serial={f['serial']} {f['detail']}")
        checked = sum(t["rows_checked"] for t in report["tables"].values())
        summary = ", ".join(f"{k} {n}" for k, n in sorted(report["summary"].items())) or "no findings"
        print(f"verified {checked} rows in {len(report['tables'])} tables: {summary}"
              + (" (truncated)" if report["truncated"] else ""))
        if report["not_copied"]:
            print("not copied (columns unknown to this taler-ops, at their default on the "
                  f"safe copy): {', '.join(report['not_copied'])}")
    return 0 if report["clean"] else 1


def _common(p: argparse.ArgumentParser) -> None:
    p.add_argument("-s", "--source-configuration", dest="source", required=True, metavar="FILE",
                   help="configuration of the source (ingres) database: [exchangedb-postgres] CONFIG")
    p.add_argument("-d", "--destination-configuration", dest="destination", required=True,
                   metavar="FILE", help="configuration of the safe copy: [exchangedb-postgres] CONFIG")
    p.add_argument("--json", action="store_true", help="print the result as JSON")


def add_parser(sub: Subparsers) -> None:
    p = sub.add_parser("sync", help="copy new, valid records from the ingres copy to the safe copy",
                       description="Copy every new, valid, append-only record from the ingres "
                                   "copy into the auditor's safe copy, one consistent snapshot "
                                   "per pass; halt on any invariant violation.")
    _common(p)
    p.add_argument("-t", "--terminate-when-synchronized", dest="terminate", action="store_true",
                   help="exit 0 after a pass that copied nothing (otherwise run as a daemon)")
    p.add_argument("-b", "--batch", type=positive_int, default=sync.DEFAULT_BATCH, metavar="N",
                   help=f"rows per destination transaction (default {sync.DEFAULT_BATCH})")
    p.add_argument("--dry-run", action="store_true",
                   help="one pass that validates and counts what would be copied; writes nothing")
    p.add_argument("--hole-horizon", type=float, default=sync.DEFAULT_HOLE_HORIZON,
                   metavar="SECONDS",
                   help="search serials missing below a watermark (holes: rows committed out "
                        "of serial order, or burned) again on every pass until the source's "
                        "replication clock moved this far; a row appearing later halts "
                        f"(late-row) (default {sync.DEFAULT_HOLE_HORIZON:g})")
    p.add_argument("--max-delay", dest="max_delay", type=float, default=sync.MAX_IDLE_DELAY,
                   metavar="SECONDS",
                   help="daemon: longest wait between two passes while idle (default "
                        f"{sync.MAX_IDLE_DELAY:g}); wake-up hints from the ingres end it early")
    p.add_argument("--no-wakeup", dest="no_wakeup", action="store_true",
                   help="daemon: do not LISTEN for the ingres' wake-up hints; poll only")
    p.add_argument("--pidfile", metavar="FILE", help="write the process id here while running")
    p.add_argument("--metrics-textfile", metavar="FILE",
                   help="daemon: keep Prometheus metrics of ingres and sync in FILE (node_exporter "
                        "textfile collector; rewritten at most every 15 s and on a halt)")
    p.set_defaults(handler=_sync)

    p = sub.add_parser("verify", help="report rows changed or deleted upstream after copying",
                       description="Compare the copied columns of already-copied rows between "
                                   "the ingres copy and the safe copy (read-only).")
    _common(p)
    p.add_argument("--block", type=positive_int, default=verify.DEFAULT_BLOCK, metavar="N",
                   help=f"serials per digest block (default {verify.DEFAULT_BLOCK})")
    p.set_defaults(handler=_verify)
