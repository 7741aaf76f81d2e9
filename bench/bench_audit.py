#!/usr/bin/env python3
"""Benchmark of ``taler-ops audit``: a first full run, an idle rerun and an increment.

Generates a history with taler_ops.workload into a throwaway local PostgreSQL,
audits it (plain and with -i), adds 10 % more traffic and audits again.
Prints rows examined per second and ratios (an increment's cost relative to
the full run), which mean more on a shared machine than absolute seconds.

    .venv/bin/python bench/bench_audit.py [--rows 200000]
"""

import argparse
import os
import sys
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.join(ROOT, "tests"))
sys.path.insert(0, os.path.join(ROOT, "plugins", "module_utils"))

from pgcluster import Cluster  # noqa: E402
from taler_ops import audit, dbinit, workload  # noqa: E402

NOW = 1_760_000_000_000_000


def timed(label, fn):
    start = time.monotonic()
    report = fn()
    seconds = time.monotonic() - start
    rows = report["rows_examined"] if isinstance(report, dict) and "rows_examined" in report \
        else sum(report.values())
    rate = rows / seconds if seconds else 0
    print(f"{label:<34} {rows:>9} rows {seconds:7.2f} s {rate:>10,.0f} rows/s")
    return seconds, report


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--rows", type=int, default=200_000)
    args = parser.parse_args()
    cluster = Cluster("bench-audit").start()
    try:
        ex, aud, aud_i = (cluster.createdb(n) for n in ("ex", "aud", "aud_i"))
        dbinit.exchange_dbinit(ex)
        dbinit.auditor_dbinit(aud)
        dbinit.auditor_dbinit(aud_i)
        timed("generate", lambda: workload.bulk(ex, args.rows, seed=1, now_us=NOW))
        full, _ = timed("audit, first run", lambda: audit.run(ex, aud, now_us=NOW))
        idle, _ = timed("audit, no new data", lambda: audit.run(ex, aud, now_us=NOW))
        internal, _ = timed("audit -i, first run",
                            lambda: audit.run(ex, aud_i, now_us=NOW, internal=True))
        timed("generate 10 % more", lambda: workload.bulk(ex, args.rows // 10, seed=2,
                                                          now_us=NOW))
        inc, _ = timed("audit, the increment", lambda: audit.run(ex, aud, now_us=NOW))
        print(f"ratios: idle/full {idle / full:.3f}, increment/full {inc / full:.3f}, "
              f"internal/full {internal / full:.2f}")
    finally:
        cluster.destroy()


if __name__ == "__main__":
    main()
