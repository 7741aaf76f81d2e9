#!/usr/bin/env python3
"""Write the sample auditor's report shown in docs/report.md: ``make report-sample``.

Builds Taler's auditor schema from Taler's own SQL files (as taler-auditor-dbinit
does) in a throwaway PostgreSQL cluster, fills it with the findings of
tests/report_data.py (one or more rows in every report table, some suppressed,
balances, progress points, denomination revenue), a run history recorded after each
table's rows (dated six hours apart: ``report_data.fill_with_history``) and a safe
copy's sync state (an open hole and a halt), and renders the report in its three forms:
``OUTDIR/report-sample.html``, ``.json`` and ``.txt``.

Usage: docs/report_sample.py [OUTDIR]   (default: docs/)
"""

import os
import subprocess
import sys
import tempfile

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
sys.path.insert(0, os.path.join(ROOT, "tests"))
sys.path.insert(0, os.path.join(ROOT, "plugins", "module_utils"))

from pgcluster import Cluster  # noqa: E402
from taler_build import DEFAULT_SQL_DIR, build_taler_auditor, taler_sql_root  # noqa: E402
import report_data as sample  # noqa: E402


def main(outdir):
    sql_root = taler_sql_root()
    if sql_root is None:
        sys.exit(f"report_sample: Taler's SQL files are missing: set TALER_SQL_DIR "
                 f"(default {DEFAULT_SQL_DIR})")
    os.makedirs(outdir, exist_ok=True)
    cluster = Cluster("report-sample").start()
    try:
        auditor = build_taler_auditor(cluster.createdb("taler_auditor"), sql_root=sql_root)
        sample.fill_with_history(auditor)
        safe = sample.safe_copy_with_sync_state(cluster, "taler_safe_copy")
        with tempfile.TemporaryDirectory() as tmp:
            conf = os.path.join(tmp, "auditor.conf")
            with open(conf, "w") as fh:
                fh.write(f"[exchange]\nCURRENCY = {sample.CUR}\n"
                         "BASE_URL = https://exchange.example.org/\n\n"
                         f"[auditordb-postgres]\nCONFIG = {auditor}\n\n"
                         f"[exchangedb-postgres]\nCONFIG = {safe}\n")
            for ext, fmt in (("html", "html"), ("json", "json"), ("txt", "text")):
                out = os.path.join(outdir, f"report-sample.{ext}")
                subprocess.run([sys.executable, "-m", "taler_ops.cli", "report", "-c", conf,
                                "--format", fmt, "-o", out], check=True,
                               env=dict(os.environ, PYTHONPATH=os.path.join(
                                   ROOT, "plugins", "module_utils")))
                print(out)
    finally:
        cluster.destroy()


if __name__ == "__main__":
    main(sys.argv[1] if len(sys.argv) > 1 else HERE)
