#!/usr/bin/env python3
"""Signature verification speed: verifications per second, one core against
every core (taler_ops.crypto.batch), side by side for each kind of signature.

Rows are made with valid signatures by the generator's signing functions
(tests/crypto_rows.py), then verified through the catalog exactly as the audit
does (block rebuilt from the row, key from the row or the configuration).
The ratio all/one is what to read on a shared machine; absolute rates move
with the load (each figure is the best of --repeat alternating runs).

    .venv/bin/python bench/bench_signatures.py [--rows 4000] [--workers N] [--db]

With --db it also writes the rows of two columns into a throwaway PostgreSQL
(the model schema) and compares reading + verifying them in the calling
process with ``BatchVerifier.verify_table``, where each worker reads its own
serial ranges and returns only the rows that do not verify.
"""

import argparse
import os
import sys
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.join(ROOT, "tests"))
sys.path.insert(0, os.path.join(ROOT, "plugins", "module_utils"))

import crypto_rows  # noqa: E402
from taler_ops.crypto import batch  # noqa: E402

KINDS = (
    # (label, catalog entry, cipher, RSA bits)
    ("EdDSA reserves_out.reserve_sig", "reserves_out.reserve_sig", "rsa", 2048),
    ("EdDSA coin_deposits.coin_sig (+KDF)", "coin_deposits.coin_sig", "rsa", 2048),
    ("RSA-2048 known_coins.denom_sig", "known_coins.denom_sig", "rsa", 2048),
    ("RSA-1024 known_coins.denom_sig", "known_coins.denom_sig", "rsa", 1024),
    ("RSA-2048 refresh ev_sig (blinded)", "refresh_revealed_coins.ev_sig", "rsa", 2048),
    ("CS known_coins.denom_sig", "known_coins.denom_sig", "cs", 0),
)


def make_rows(name, cipher, bits, n):
    # Fix the denomination of this kind (crypto_rows caches one per (cipher, bits)).
    crypto_rows.denomination(cipher, bits or 1024)
    orig = crypto_rows.denomination
    crypto_rows.denomination = lambda c="rsa", b=1024: orig(cipher, bits or 1024)
    try:
        rows, ctx = [], None
        for _ in range(n):
            row, _key, ctx = crypto_rows.signed(name, cipher)
            rows.append(row)
        return rows, ctx
    finally:
        crypto_rows.denomination = orig


def cpu_seconds(pids):
    """User+system CPU time of these processes so far (Linux /proc)."""
    tick = os.sysconf("SC_CLK_TCK")
    total = 0.0
    for pid in pids:
        try:
            with open(f"/proc/{pid}/stat") as fh:
                fields = fh.read().rsplit(")", 1)[1].split()
            total += (int(fields[11]) + int(fields[12])) / tick
        except FileNotFoundError:
            pass
    return total


def rate(fn, rows, pool=None):
    """(verifications per wall-clock second, per CPU second of all processes)."""
    # The pool may start workers on demand: ask for them before and after.
    pids = lambda: [os.getpid(), *(pool._processes if pool else ())]  # noqa: E731
    cpu0, before, start = cpu_seconds(pids()), set(pids()), time.perf_counter()
    verdicts = fn()
    seconds = time.perf_counter() - start
    assert set(pids()) == before, "workers started during the measurement"
    cpu = cpu_seconds(pids()) - cpu0
    assert verdicts == [True] * len(rows), "a valid row did not verify"
    return len(rows) / seconds, len(rows) / cpu if cpu else float("inf")


def best_of(repeat, one, every, rows, pool):
    """Alternate the two measurements and keep each one's best run (with the
    CPU figure of that run): other processes on a shared machine then
    disturb both alike."""
    ones, everys = [], []
    for _ in range(repeat):
        ones.append(rate(one, rows))
        everys.append(rate(every, rows, pool))
    return max(ones), max(everys)


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--rows", type=int, default=4000)
    parser.add_argument("--workers", type=int, default=batch.cpu_count())
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--db", action="store_true", help="also read the rows from PostgreSQL")
    args = parser.parse_args()

    print(f"{args.rows} rows per kind; all cores = {args.workers} worker processes "
          f"(machine: {os.cpu_count()} CPUs, load {os.getloadavg()[0]:.2f})")
    verifier = batch.BatchVerifier(workers=args.workers, min_parallel=0)
    start = time.perf_counter()
    warm = [crypto_rows.signed("recoup.coin_sig")[0] for _ in range(64 * args.workers)]
    verifier.verify("recoup.coin_sig", warm, crypto_rows.CTX)
    print(f"pool start (once per process): {time.perf_counter() - start:.2f} s")
    print("per CPU s: verifications per CPU second of every process involved (parent and "
          "workers);\nits ratio shows what the pool costs besides the verifications themselves\n")
    print(f"{'signature':<38} {'1 core /s':>10} {'all cores /s':>13} {'ratio':>6}"
          f" {'1 core /CPU s':>14} {'all /CPU s':>11} {'ratio':>6}")
    for label, name, cipher, bits in KINDS:
        rows, ctx = make_rows(name, cipher, bits, args.rows)
        (one, one_cpu), (every, every_cpu) = best_of(
            args.repeat, lambda: batch.verify_sequential(name, rows, ctx),
            lambda: verifier.verify(name, rows, ctx), rows, verifier._pool)
        print(f"{label:<38} {one:>10,.0f} {every:>13,.0f} {every / one:>5.2f}x"
              f" {one_cpu:>14,.0f} {every_cpu:>11,.0f} {every_cpu / one_cpu:>5.2f}x", flush=True)
    if args.db:
        bench_db(verifier, args.rows, args.repeat)
    verifier.close()


def bench_db(verifier, n, repeat):
    import psycopg
    from pgcluster import Cluster
    from taler_ops.schema import dbinit
    from taler_ops.crypto import eddsa

    cluster = Cluster("bench-signatures").start()
    try:
        uri = cluster.createdb("sigs")
        dbinit.exchange_dbinit(uri)
        dk = crypto_rows.denomination("rsa", 2048)
        spec = crypto_rows.catalog_get("recoup.coin_sig")
        with psycopg.connect(uri) as conn:
            conn.execute("SET session_replication_role = replica")   # no parents needed
            conn.execute(
                "INSERT INTO exchange.denominations (denominations_serial, denom_pub_hash, denom_pub,"
                " master_sig, valid_from, expire_withdraw, expire_deposit, expire_legal, coin,"
                " fee_withdraw, fee_deposit, fee_refresh, fee_refund) VALUES (1, %s, %s, %s, 0, 0, 0, 0, "
                + ", ".join(["ROW(1,0)::exchange.taler_amount"] * 5) + ")",
                (dk.denom_pub_hash, dk.denom_pub, bytes(64)))
            coins, recoups = [], []
            for i in range(1, n + 1):
                seed, blind = crypto_rows.rb(32), crypto_rows.rb(32)
                coin_pub = eddsa.public_key(seed)
                coins.append((i, 1, coin_pub, dk.sign_coin(crypto_rows.coin_hash_of(coin_pub))))
                sig = spec.sign(dict(denom_pub_hash=dk.denom_pub_hash, coin_blind=blind),
                                crypto_rows.CTX, seed)
                recoups.append((i, coin_pub, sig, blind, "(1,0)", 0, 1))
            # One COPY at a time: a connection carries a single COPY.
            for table, columns, rows in (
                    ("known_coins", "known_coin_id, denominations_serial, coin_pub, denom_sig", coins),
                    ("recoup", "recoup_uuid, coin_pub, coin_sig, coin_blind, amount,"
                               " recoup_timestamp, reserve_out_serial_id", recoups)):
                with conn.cursor().copy(f"COPY exchange.{table} ({columns}) FROM STDIN") as copy:
                    for row in rows:
                        copy.write_row(row)
        print(f"\nfrom PostgreSQL ({n} rows per column): read + verify")
        print(f"{'signature':<38} {'in process /s':>14} {'workers read /s':>16} {'ratio':>6}")
        for label, name in (("EdDSA recoup.coin_sig", "recoup.coin_sig"),
                            ("RSA-2048 known_coins.denom_sig", "known_coins.denom_sig")):
            ones, alls = [], []
            for _ in range(repeat):
                start = time.perf_counter()
                checked, bad = batch.verify_range(uri, name, crypto_rows.CTX, 0, n)
                ones.append(checked / (time.perf_counter() - start))
                assert checked == n and not bad
                start = time.perf_counter()
                checked, bad = verifier.verify_table(uri, name, crypto_rows.CTX, 0, n)
                alls.append(checked / (time.perf_counter() - start))
                assert checked == n and not bad
            print(f"{label:<38} {max(ones):>14,.0f} {max(alls):>16,.0f} {max(alls) / max(ones):>5.2f}x",
                  flush=True)
    finally:
        cluster.destroy()


if __name__ == "__main__":
    main()
