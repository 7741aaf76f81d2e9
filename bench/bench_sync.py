#!/usr/bin/env python3
"""Benchmark of the safe sync (issue 5).  Prints figures; asserts nothing.

One run, one throwaway PostgreSQL cluster, the same N source rows for every method:

  (a) raw COPY: each table streamed as one binary COPY from the source into an
      identical, empty, fully constrained safe copy (no validation, no batches);
  (b) ``taler-ops sync -t`` into another empty safe copy (a subprocess; its peak
      RSS comes from wait4);
  (c) the reference tool's method: one INSERT per row, one transaction per table.

Then the source grows to 3N rows and (b) runs again into a fresh safe copy, to
show that the sync's memory does not grow with the backlog.

    .venv/bin/python bench/bench_sync.py --rows 200000
    .venv/bin/python bench/bench_sync.py --rows 200000 --flavour taler   # Taler-built databases

With ``--flavour taler`` every database is built from Taler's own SQL files
(TALER_SQL_DIR).  (a) then loads with the foreign keys checked, as for the model,
but Taler's own business triggers (history tables) disabled on its throwaway target:
the sync never runs them either (it copies as a replica and checks parents itself).

Targets (issue 5): b/a >= 0.8, b/c >= 10, RSS <= 150 MB and flat from N to 3N.
"""

import argparse
import os
import shutil
import subprocess
import sys
import tempfile
import time

import psycopg

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.join(ROOT, "tests"))

from pgcluster import Cluster  # noqa: E402
from taler_build import build_taler_exchange, require_taler_sql  # noqa: E402
from taler_ops import sync  # noqa: E402
from taler_ops.schema import dbinit, hashing, registry  # noqa: E402
from taler_ops.schema.exchange_tables import TABLES  # noqa: E402
from taler_ops.schema.spec import HASHCODE  # noqa: E402

SPECS = {t.name: t for t in TABLES}
BASE_TIME = 1_700_000_000_000_000


# -- source data -------------------------------------------------------------------

def _bytes_sql(label, n):
    blocks = (n + 63) // 64
    parts = [f"sha512(convert_to('{label}/{k}/' || i, 'UTF8'))" for k in range(blocks)]
    return f"substring({' || '.join(parts)} from 1 for {n})"


def _value_sql(table, column):
    """SQL for row i's value (FK columns point at row i of the parent)."""
    spec = SPECS[table]
    col = spec.column(column)
    if column == spec.serial:
        return "i"
    for fk in spec.foreign_keys:
        if column in fk.columns and fk.table != table:
            return _value_sql(fk.table, fk.ref_columns[fk.columns.index(column)])
    for d in spec.derived:
        if d.column == column:
            # A parent-dependent rule (h_coin_ev) reads row i of the parent.
            parent = None if d.parent is None else _value_sql(d.parent[1], d.parent[3])
            return hashing.sql_expression(d.rule, _value_sql(table, d.source), parent)
    if col.sql_type == HASHCODE:
        return _bytes_sql(f"{table}.{column}", 32)
    if col.sql_type == HASHCODE + "[]":
        return f"ARRAY[{_bytes_sql(f'{table}.{column}', 32)}]::{HASHCODE}[]"
    if col.sql_type == "bytea":
        return _bytes_sql(f"{table}.{column}", col.length or 16)
    if col.is_amount:
        return "ROW(i % 1000, (i * 7919) % 100000000)::exchange.taler_amount"
    if col.sql_type == "text":
        if column == "payto_uri":
            return (f"'payto://x-taler-bank/bank.example/Acct{table}' || i "
                    "|| '?receiver-name=Name' || i")
        return f"'{column}-' || i"
    if col.sql_type == "boolean":
        return "i % 2 = 1"
    if col.sql_type == "smallint":
        return "(i % 6)::smallint"
    if col.sql_type == "integer":
        return "(i % 1000000)::integer"
    return f"{BASE_TIME} + i"


def fill_source(uri, per_table, start=1):
    """Rows start..start+per_table-1 in every replicated table, set-based (fast)."""
    with psycopg.connect(uri, autocommit=True) as conn:
        for entry in registry.REPLICATED:
            cols = entry.copy_columns
            conn.execute(
                f'INSERT INTO exchange."{entry.name}" ({", ".join(chr(34) + c.name + chr(34) for c in cols)}) '
                f'SELECT {", ".join(_value_sql(entry.name, c.name) for c in cols)} '
                f"FROM generate_series({start}, {start + per_table - 1}) AS i")
        conn.execute("VACUUM ANALYZE")


def generate(uri, rows):
    """The generator's mix when taler_ops.sim.generator exists, else an even spread over the tables."""
    try:
        from taler_ops.sim import generator
    except ImportError:
        generator = None
    if generator is not None and hasattr(generator, "bulk"):
        generator.bulk(uri, rows, seed=0)
        mix = "taler_ops.sim.generator.bulk"
    else:
        per = max(1, rows // len(registry.REPLICATED))
        fill_source(uri, per)
        mix = f"even spread, {per} rows per table"
    # As autovacuum would have done on a real ingres: hint bits set, statistics there,
    # so no method pays for the first read of fresh rows.
    with psycopg.connect(uri, autocommit=True) as conn:
        conn.execute("VACUUM ANALYZE")
    return mix


def count_rows(uri):
    with psycopg.connect(uri) as conn:
        return sum(conn.execute(f'SELECT count(*) FROM exchange."{e.name}"').fetchone()[0]
                   for e in registry.REPLICATED)


# -- the three methods -------------------------------------------------------------

def raw_copy(src, dst, user_triggers_off=False):
    with psycopg.connect(src) as s, psycopg.connect(dst) as d:
        if user_triggers_off:
            for e in registry.REPLICATED:
                d.execute(f'ALTER TABLE exchange."{e.name}" DISABLE TRIGGER USER')
            d.commit()
        for e in registry.REPLICATED:
            cols = ", ".join(f'"{c.name}"' for c in e.copy_columns)
            with d.transaction(), d.cursor().copy(
                    f'COPY exchange."{e.name}" ({cols}) FROM STDIN (FORMAT BINARY)') as sink:
                with s.cursor().copy(f'COPY (SELECT {cols} FROM exchange."{e.name}" '
                                     f'ORDER BY "{e.serial}") TO STDOUT (FORMAT BINARY)') as source:
                    for block in source:
                        sink.write(block)
            s.rollback()


def row_by_row(src, dst):
    with psycopg.connect(src) as s, psycopg.connect(dst) as d:
        for e in registry.REPLICATED:
            cols = [c.name for c in e.copy_columns]
            collist = ", ".join(f'"{c}"' for c in cols)
            amounts = {c.name for c in e.copy_columns if c.is_amount}
            select = ", ".join(f'"{c}"::text' if c in amounts else f'"{c}"' for c in cols)
            values = ", ".join("%s::exchange.taler_amount" if c in amounts else "%s"
                               for c in cols)
            insert = f'INSERT INTO exchange."{e.name}" ({collist}) VALUES ({values})'
            with d.transaction(), s.cursor(name="rows") as reader:
                reader.execute(f'SELECT {select} FROM exchange."{e.name}" ORDER BY "{e.serial}"')
                cur = d.cursor()
                for row in reader:
                    cur.execute(insert, row, prepare=True)
            s.rollback()


def run_sync(src, dst, batch, workdir):
    confs = []
    for name, uri in (("src", src), ("dst", dst)):
        path = os.path.join(workdir, f"{name}-{time.monotonic_ns()}.conf")
        with open(path, "w") as fh:
            fh.write(f"[exchangedb-postgres]\nCONFIG = {uri}\n")
        confs.append(path)
    proc = subprocess.Popen([sys.executable, "-m", "taler_ops.cli", "sync", "-s", confs[0],
                             "-d", confs[1], "-t", "-b", str(batch)],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, cwd=ROOT)
    _, status, usage = os.wait4(proc.pid, 0)
    out, err = proc.stdout.read().decode(), proc.stderr.read().decode()
    if os.waitstatus_to_exitcode(status) != 0:
        raise SystemExit(f"sync failed:\n{out}\n{err}")
    return usage.ru_maxrss / 1024.0  # MiB (Linux reports KiB)


def timed(label, fn, rows):
    t0 = time.monotonic()
    out = fn()
    seconds = time.monotonic() - t0
    rate = rows / seconds
    print(f"  {label:<44} {seconds:8.2f} s {rate:12,.0f} rows/s", flush=True)
    return rate, out


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--rows", type=int, default=1_000_000, help="N (default 1,000,000)")
    ap.add_argument("--batch", type=int, default=sync.DEFAULT_BATCH, help="sync -b")
    ap.add_argument("--no-3n", action="store_true", help="skip the 3N memory run")
    ap.add_argument("--no-rowwise", action="store_true", help="skip the row-by-row baseline")
    ap.add_argument("--flavour", choices=["model", "taler"], default="model",
                    help="databases from taler-ops' model or from Taler's own SQL files")
    args = ap.parse_args()
    taler = args.flavour == "taler"
    if taler and args.no_rowwise is False:
        args.no_rowwise = True   # Taler's triggers would fire on plain INSERTs: not comparable

    def exchange_db(name, role):
        uri = cluster.createdb(name)
        if taler:
            build_taler_exchange(uri, sql_root=require_taler_sql())
        dbinit.exchange_dbinit(uri, role=role)
        return uri

    cluster = Cluster("bench-sync").start()
    workdir = tempfile.mkdtemp(prefix="bench-sync-")
    try:
        src = exchange_db("src", "ingres")
        t0 = time.monotonic()
        mix = generate(src, args.rows)
        n = count_rows(src)
        print(f"source: {n:,} rows ({mix}), generated in {time.monotonic() - t0:.1f} s; "
              f"sync batch {args.batch}; flavour {args.flavour}", flush=True)

        def target(name):
            return exchange_db(name, "safe-copy")

        dst_a, dst_b = target("raw_copy"), target("sync")
        rate_a, _ = timed("(a) raw COPY into the constrained safe copy",
                          lambda: raw_copy(src, dst_a, user_triggers_off=taler), n)
        rate_b, rss_n = timed("(b) taler-ops sync -t", lambda: run_sync(src, dst_b, args.batch, workdir), n)
        if count_rows(dst_b) != n:
            raise SystemExit("the sync did not copy every row")
        print(f"  b/a = {rate_b / rate_a:.2f}   (target >= 0.8)")
        if not args.no_rowwise:
            dst_c = target("row_by_row")
            rate_c, _ = timed("(c) one INSERT per row, one tx per table", lambda: row_by_row(src, dst_c), n)
            print(f"  b/c = {rate_b / rate_c:.1f}   (target >= 10)")
        print(f"  sync peak RSS at {n:,} rows: {rss_n:.1f} MiB")
        if not args.no_3n:
            src3 = exchange_db("src_3n", "ingres")
            generate(src3, 3 * args.rows)
            n3 = count_rows(src3)
            dst_3 = target("sync_3n")
            rate_3, rss_3 = timed(f"(b) sync -t at {n3:,} rows",
                                  lambda: run_sync(src3, dst_3, args.batch, workdir), n3)
            print(f"  sync peak RSS at {n3:,} rows: {rss_3:.1f} MiB (at N: {rss_n:.1f} MiB)")
    finally:
        cluster.destroy()
        shutil.rmtree(workdir, ignore_errors=True)


if __name__ == "__main__":
    main()
