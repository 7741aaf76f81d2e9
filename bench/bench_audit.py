#!/usr/bin/env python3
"""Benchmark of ``taler-ops audit`` side by side with the sync, on the same rows.

Generates a history with taler_ops.sim.generator (valid signatures) into an exchange
primary of a throwaway local PostgreSQL, syncs it into a safe copy (``sync -t``),
then audits the safe copy: once without the signatures check (no master key:
the arithmetic checks only), once with it (every signature column verified on
every core, crypto.batch), an idle rerun, and an increment after 10 % more
traffic (synced, then audited).  Prints rows per second for each, and the
signatures check on its own (the difference of the two full runs).

The rates are rows of the exchange tables read per second of wall-clock time:
for the sync, rows copied; for the audit, rows examined summed over the
checks (a row read by two checks counts twice, as does a row with two
signature columns).  On a shared machine compare the ratios printed at the end.

    .venv/bin/python bench/bench_audit.py [--rows 50000]
"""

import argparse
import os
import sys
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.join(ROOT, "tests"))
sys.path.insert(0, os.path.join(ROOT, "plugins", "module_utils"))

from pgcluster import Cluster  # noqa: E402
from taler_ops import audit, sync  # noqa: E402
from taler_ops.audit import signatures as audit_signatures  # noqa: E402
from taler_ops.schema import dbinit  # noqa: E402
from taler_ops.sim import generator  # noqa: E402
from taler_ops.crypto import batch, keyring  # noqa: E402

NOW = 1_760_000_000_000_000
SEED = 1


def rows_of(result):
    if "rows_examined" in result:
        return result["rows_examined"]
    if "copied" in result:
        return result["copied"]
    return sum(result.values())


def timed(label, fn):
    start = time.monotonic()
    result = fn()
    seconds = time.monotonic() - start
    rows = rows_of(result)
    rate = rows / seconds if seconds else 0
    print(f"{label:<44} {rows:>9,} rows {seconds:8.2f} s {rate:>10,.0f} rows/s", flush=True)
    return seconds, rows, result


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--rows", type=int, default=50_000)
    args = parser.parse_args()
    keys = keyring.Keyring(SEED)
    ctx = keys.ctx
    cluster = Cluster("bench-audit").start()
    try:
        ex, safe, aud_plain, aud_sig, aud_one = (
            cluster.createdb(n) for n in ("ex", "safe", "aud_plain", "aud_sig", "aud_one"))
        dbinit.exchange_dbinit(ex)
        dbinit.exchange_dbinit(safe, role="safe-copy")
        for uri in (aud_plain, aud_sig, aud_one):
            dbinit.auditor_dbinit(uri)
        print(f"{batch.cpu_count()} CPUs, load average {os.getloadavg()[0]:.2f}; "
              f"signature workers: {batch.cpu_count()}")
        timed("generate (primary)", lambda: generator.bulk(ex, args.rows, seed=SEED, now_us=NOW,
                                                           keys=keys))
        s_sync, n_sync, _ = timed("sync -t into the safe copy", lambda: sync.sync_once(ex, safe))
        s_plain, n_plain, _ = timed(
            "audit, first run, without signatures",
            lambda: audit.run(safe, aud_plain, currency=ctx.currency, now_us=NOW))
        s_full, n_full, report = timed(
            "audit, first run, with signatures",
            lambda: audit.run(safe, aud_sig, currency=ctx.currency, now_us=NOW, signatures=ctx))
        assert report["findings"] == [], report["findings"][:3]
        n_sig = sum(report["checks"]["signatures"]["rows_examined"].values())
        s_sig = max(s_full - s_plain, 1e-9)
        print(f"{'  of which the signatures check (difference)':<44} {n_sig:>9,} sigs "
              f"{s_sig:8.2f} s {n_sig / s_sig:>10,.0f} sigs/s")
        audit_signatures.WORKERS = 1
        s_one, n_one, _ = timed(
            "audit with signatures, one process",
            lambda: audit.run(safe, aud_one, currency=ctx.currency, now_us=NOW, signatures=ctx))
        audit_signatures.WORKERS = None
        s_sig1 = max(s_one - s_plain, 1e-9)
        print(f"{'  of which the signatures check (difference)':<44} {n_sig:>9,} sigs "
              f"{s_sig1:8.2f} s {n_sig / s_sig1:>10,.0f} sigs/s")
        s_idle, _, _ = timed("audit, no new data", lambda: audit.run(
            safe, aud_sig, currency=ctx.currency, now_us=NOW, signatures=ctx))
        timed("generate 10 % more", lambda: generator.bulk(ex, args.rows // 10, seed=SEED,
                                                           now_us=NOW, keys=keys))
        s_isync, n_isync, _ = timed("sync -t, the increment", lambda: sync.sync_once(ex, safe))
        s_inc, n_inc, report = timed("audit with signatures, the increment", lambda: audit.run(
            safe, aud_sig, currency=ctx.currency, now_us=NOW, signatures=ctx))
        assert report["findings"] == [], report["findings"][:3]
        print()
        print(f"{'side by side (rows/s)':<30} {'sync':>10} {'audit':>10} {'audit+sigs':>11} "
              f"{'(1 process)':>11}")
        print(f"{'first run':<30} {n_sync / s_sync:>10,.0f} {n_plain / s_plain:>10,.0f} "
              f"{n_full / s_full:>11,.0f} {n_one / s_one:>11,.0f}")
        print(f"{'per synced row':<30} {n_sync / s_sync:>10,.0f} {n_sync / s_plain:>10,.0f} "
              f"{n_sync / s_full:>11,.0f} {n_sync / s_one:>11,.0f}")
        print(f"{'increment, per synced row':<30} {n_isync / s_isync:>10,.0f} {'':>10} "
              f"{n_isync / s_inc:>11,.0f}")
        print(f"ratios: audit+sigs/sync time {s_full / s_sync:.2f}, signatures/audit "
              f"{s_sig / s_plain:.2f}, idle/full {s_idle / s_full:.3f}, "
              f"increment/full {s_inc / s_full:.3f}")
    finally:
        cluster.destroy()


if __name__ == "__main__":
    main()
