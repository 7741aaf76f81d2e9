#!/usr/bin/env python3
"""Benchmark of ``taler-ops generate``: bulk rows/s into a throwaway local PostgreSQL.

Prints, per schema layout, the measured wall-clock rate and the CPU seconds
spent by the generator (Python) and by the server.  "foreign_keys" is a
non-partitioned schema with its foreign keys checked per chunk by anti-joins
(the default for a superuser), "fk_triggers" the same schema with the
server's per-row foreign-key triggers.  The generator builds the
next chunk while the server checks and indexes the previous one, so on a
machine with two free cores the rate approaches rows / max(python, server)
CPU seconds; that figure is printed too ("cpu-bound"), since wall-clock rates
on a shared machine depend on what else runs.

    .venv/bin/python bench/bench_generator.py [--rows 1000000] [--live-rate 5000]
"""

import argparse
import os
import sys
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.join(ROOT, "tests"))
sys.path.insert(0, os.path.join(ROOT, "plugins", "module_utils"))

from pgcluster import Cluster  # noqa: E402
from taler_ops.schema import dbinit  # noqa: E402
from taler_ops.sim import generator  # noqa: E402

TICK = os.sysconf("SC_CLK_TCK")


def _cpu(pid, children=False):
    try:
        with open(f"/proc/{pid}/stat") as fh:
            fields = fh.read().rsplit(")", 1)[1].split()
    except OSError:
        return 0.0
    used = int(fields[11]) + int(fields[12])
    if children:
        used += int(fields[13]) + int(fields[14])
    return used / TICK


def server_cpu(cluster):
    """CPU seconds of the cluster: postmaster, its live children, its reaped children."""
    with open(os.path.join(cluster.data, "postmaster.pid")) as fh:
        postmaster = int(fh.readline())
    total = _cpu(postmaster, children=True)
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                with open(f"/proc/{entry}/stat") as fh:
                    ppid = int(fh.read().rsplit(")", 1)[1].split()[1])
            except (OSError, ValueError, IndexError):
                continue
            if ppid == postmaster:
                total += _cpu(int(entry))
    return total


def bench_bulk(cluster, name, rows, fk_check="auto", **layout):
    uri = cluster.createdb(name)
    dbinit.exchange_dbinit(uri, **layout)
    s0, p0, t0 = server_cpu(cluster), time.process_time(), time.monotonic()
    inserted = generator.bulk(uri, rows, seed=1, fk_check=fk_check)
    wall = time.monotonic() - t0
    py, srv = time.process_time() - p0, server_cpu(cluster) - s0
    n = sum(inserted.values())
    print(f"bulk {name:<14} {n:>9,} rows  {wall:6.2f} s  {n / wall:>9,.0f} rows/s measured  "
          f"python {py:5.2f} s  server {srv:5.2f} s  "
          f"{n / max(py, srv, 1e-9):>9,.0f} rows/s cpu-bound", flush=True)
    return uri


def bench_live(uri, rate, duration):
    stats = generator.live(uri, rate, duration, seed=2)
    print(f"live asked {rate:,} rows/s for {duration:g} s: {stats['rows_per_second']:,} rows/s "
          f"in {stats['transactions']} transactions, "
          f"{sum(stats['updated'].values()):,} rows updated", flush=True)


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--rows", type=int, default=1_000_000)
    parser.add_argument("--live-rate", type=int, default=5000)
    parser.add_argument("--live-seconds", type=float, default=5.0)
    parser.add_argument("--skip-triggers", action="store_true",
                        help="leave out the run where the server's FK triggers check each row")
    args = parser.parse_args()
    cluster = Cluster("bench-generator").start()
    try:
        print(f"{os.cpu_count()} CPUs, load average {os.getloadavg()[0]:.2f}")
        uri = bench_bulk(cluster, "foreign_keys", args.rows)
        if not args.skip_triggers:
            bench_bulk(cluster, "fk_triggers", args.rows, fk_check="triggers")
        bench_bulk(cluster, "partitioned_4", args.rows, partitions=4)
        bench_bulk(cluster, "ingres", args.rows, role="ingres")
        if args.live_rate > 0:
            bench_live(uri, args.live_rate, args.live_seconds)
    finally:
        cluster.destroy()


if __name__ == "__main__":
    main()
