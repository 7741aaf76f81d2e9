"""``taler-ops report -c CONF [--format html|json|text] [--since REPORT.json] [-o FILE]``.

Renders the auditor's report from Taler's auditor database ([auditordb-postgres]
CONFIG); the safe copy's sync state ([exchangedb-postgres] CONFIG) is added when
the section is set and the database readable.  Read-only.

Exit codes: 0 when the report was written, whatever it shows; 1 when it could
not be read or written; 2 for bad arguments; 5 when the auditor database is
unreachable or holds no Taler auditor schema; 6 for configuration errors.
"""

import argparse
import os
import sys
import tempfile

from .. import config
from ..audit import report
from .args import Subparsers, positive_int
from ..errors import TalerOpsError


def _write(path: str | None, text: str) -> None:
    if path in (None, "-"):
        sys.stdout.write(text)
        return
    directory = os.path.dirname(os.path.abspath(path))
    try:
        fd, tmp = tempfile.mkstemp(prefix=".report-", dir=directory)
        with os.fdopen(fd, "w", encoding="utf-8") as fh:
            fh.write(text)
        os.chmod(tmp, 0o644)
        os.replace(tmp, path)
    except OSError as exc:
        raise TalerOpsError(f"cannot write the report to {path}: {exc}") from None


def _handle(args: argparse.Namespace) -> int:
    cfg = config.load(args.config, project="taler-auditor")
    auditor_uri = config.auditordb_uri(cfg)
    exchange_uri = None
    if cfg.get_string("exchangedb-postgres", "CONFIG", required=False):
        exchange_uri = config.exchangedb_uri(cfg)
    currency = cfg.get_string("exchange", "CURRENCY", required=False) or None
    base_url = cfg.get_string("exchange", "BASE_URL", required=False) or None
    since = report.load_since(args.since) if args.since else None
    model = report.collect(auditor_uri, exchange_uri, currency=currency, exchange_url=base_url,
                           since=since, max_rows=args.max_rows)
    fmt = args.format or ("json" if args.output and args.output.endswith(".json") else
                          "text" if args.output in (None, "-") or args.output.endswith(".txt")
                          else "html")
    _write(args.output, report.RENDERERS[fmt](model))
    if args.output not in (None, "-"):
        s = model["summary"]
        print(f"report written to {os.path.abspath(args.output)} ({fmt}): "
              f"{s['findings_open']} open finding(s), {s['findings_suppressed']} suppressed, "
              f"losses {s['loss_total']}, at risk {s['risk_total']}", file=sys.stderr)
    return 0


def add_parser(sub: Subparsers) -> None:
    p = sub.add_parser(
        "report", help="the auditor's report (HTML, JSON or text) from Taler's auditor database",
        description="Render the auditor's report from Taler's auditor database: what was "
                    "audited, risk and losses, the findings of each check, balances and "
                    "fee revenue, and the sync's open holes and halts.")
    p.add_argument("-c", "--config", metavar="FILE",
                   help="configuration with [auditordb-postgres] CONFIG; optional "
                        "[exchangedb-postgres] CONFIG (the safe copy: sync state), "
                        "[exchange] CURRENCY and BASE_URL (default: Taler's "
                        "taler-auditor.conf search)")
    p.add_argument("--format", choices=sorted(report.RENDERERS),
                   help="output form (default: from -o's extension: .json, .txt, else html; "
                        "text on stdout)")
    p.add_argument("-o", "--output", metavar="FILE",
                   help="write the report to FILE, atomically (default or '-': stdout)")
    p.add_argument("--since", metavar="REPORT.json",
                   help="list only findings recorded after an earlier JSON report (row ids "
                        "above the highest it saw per table); balances stay current")
    p.add_argument("--max-rows", type=positive_int, default=report.DEFAULT_MAX_ROWS, metavar="N",
                   help="list at most N open and N suppressed findings per table (counts and "
                        f"totals always cover all; default {report.DEFAULT_MAX_ROWS})")
    p.set_defaults(handler=_handle)
