#!/usr/bin/env python3
"""Scale bench (issue 20, item 3): the whole pipeline at millions of rows.  Prints figures.

One run, three throwaway clusters as the tests build them (tests/pgcluster.py,
durability off): the exchange primary publishes, the ingres subscribes, the
safe copy and the auditor database share the third.  The history grows in
``--steps`` equal increments (default 10 of ``--rows``/10).  Each increment runs
the stages one after the other, so each has the machine to itself:

  generate  ``generator.bulk`` continues the primary's history (the subscription
            is disabled meanwhile, as if the link were slow);
  repl      the subscription is enabled; time until its slot confirmed the WAL
            position the generator ended at (the ingres copy caught up);
  sync      ``taler-ops sync -t`` as a subprocess: the increment into the safe copy
            (rows/s, and its peak RSS: VmHWM from /proc, sampled while it runs);
  audit     ``audit.run`` on the safe copy, incremental (rows examined/s);

and, on the first and the last increment only (they read the whole database):

  verify    ``verify.verify`` ingres against safe copy, every row (rows checked/s);
  gc        ``gc.collect`` on the safe copy (rows of the database per second).

The degradation check is a ratio inside this one run: each stage's rate on the
last increment (database at N rows) over its rate on the first (at N/steps);
sync RSS likewise.  Disk: pg_database_size of each copy per million rows.

Wall time on a shared machine moves with everything else running, so each stage
is also measured in CPU seconds of this bench and everything it starts (its
three clusters' servers and backends, autovacuum included, and the sync
subprocess): the bench runs in a cgroup of its own (cgroup v1 cpuacct or v2
cpu.stat) when it may create one, i.e. as root.  Rows per CPU second is the
figure that other load does not move; time spent waiting for the disk is not in
it, so both ratios are printed.

Generation is unsigned by default (``generator.bulk(signed=False)``: random bytes
of the right layouts, ten times faster), so the audit runs WITHOUT the
signatures check (no master key); ``--signed`` for real signatures and checks.

    .venv/bin/python bench/bench_scale.py --rows 200000                  # a quick check
    .venv/bin/python bench/bench_scale.py --rows 10000000 --flavour taler -P 4

Not part of ``make test``.  Noisy on a shared machine: compare ratios of one run.
"""

import argparse
import contextlib
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time

import psycopg

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.join(ROOT, "tests"))
sys.path.insert(0, os.path.join(ROOT, "plugins", "module_utils"))

from pgcluster import Cluster  # noqa: E402
from taler_build import build_taler_exchange, require_taler_sql  # noqa: E402
from taler_ops import audit, db  # noqa: E402
from taler_ops.ingres import replication  # noqa: E402
from taler_ops.schema import dbinit, gc, registry  # noqa: E402
from taler_ops.sim import generator  # noqa: E402
from taler_ops.sync import verify  # noqa: E402
from taler_ops.crypto import keyring  # noqa: E402

SEED = 1
SETTINGS = {"max_wal_size": "8GB", "checkpoint_timeout": "30min",
            # one replication origin per table synchronisation worker on the ingres
            "max_replication_slots": "40", "max_worker_processes": "16"}


def _conf(path, uri):
    with open(path, "w") as fh:
        fh.write(f"[exchangedb-postgres]\nCONFIG = {uri}\n")
    return path


def _wait(predicate, timeout, poll=0.2):
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise SystemExit(f"timed out after {timeout} s")
        time.sleep(poll)


class CpuMeter:
    """CPU seconds used by this process and all it starts afterwards, from a cgroup
    of its own; ``None`` readings when no cgroup can be made (not root, no cgroupfs)."""

    V1 = "/sys/fs/cgroup/cpuacct"
    V2 = "/sys/fs/cgroup"

    def __init__(self):
        self.path = self.usage = None
        name = f"taler-ops-bench-{os.getpid()}"
        for base, usage, v2 in ((self.V1, "cpuacct.usage", False), (self.V2, "cpu.stat", True)):
            if not os.path.exists(os.path.join(base, "cgroup.procs")):
                continue
            path = os.path.join(base, name)
            try:
                os.mkdir(path)
                with open(os.path.join(path, "cgroup.procs"), "w") as fh:
                    fh.write(str(os.getpid()))
            except OSError:
                with contextlib.suppress(OSError):
                    os.rmdir(path)
                continue
            self.path, self.usage, self.base, self.v2 = path, os.path.join(path, usage), base, v2
            return

    def seconds(self):
        if self.usage is None:
            return None
        with open(self.usage) as fh:
            if not self.v2:
                return int(fh.read()) / 1e9
            for line in fh:
                if line.startswith("usage_usec "):
                    return int(line.split()[1]) / 1e6
        return None

    def close(self):
        """Back to the parent group, and the group removed (the clusters are gone by now)."""
        if self.path is None:
            return
        with contextlib.suppress(OSError):
            with open(os.path.join(self.base, "cgroup.procs"), "w") as fh:
                fh.write(str(os.getpid()))
            os.rmdir(self.path)


def db_size(uri):
    with psycopg.connect(uri) as conn:
        return conn.execute("SELECT pg_database_size(current_database())").fetchone()[0]


class Bench:
    def __init__(self, args):
        self.args = args
        self.taler = args.flavour == "taler"
        self.tmp = tempfile.mkdtemp(prefix="bench-scale-")
        self.clusters = []
        self.keys = keyring.Keyring(SEED)
        self.cpu = CpuMeter()       # before any cluster starts: they join its group
        self.rows = {}              # stage -> [(increment, rows, seconds, cpu seconds)]
        self.rss = []               # (database rows, MiB)

    def cluster(self, name):
        c = Cluster(name, settings=SETTINGS).start()
        self.clusters.append(c)
        return c

    def exchange_db(self, cluster, name, role):
        uri = cluster.createdb(name)
        if self.taler:
            # The primary as Taler's dbinit makes it (-P partitions); the auditor's copies
            # from the same files, unpartitioned, then taken over by taler-ops.
            build_taler_exchange(uri, partitions=self.args.partitions if role == "primary"
                                 else None, sql_root=require_taler_sql())
            if role != "primary":
                dbinit.exchange_dbinit(uri, role=role)
        else:
            dbinit.exchange_dbinit(uri, role=role)
        return uri

    def setup(self):
        self.px, self.ix, self.sx = (self.cluster(n) for n in
                                     ("scale-exchange", "scale-ingres", "scale-safe"))
        self.primary = self.exchange_db(self.px, "exchange", "primary")
        self.ingres = self.exchange_db(self.ix, "ingres", "ingres")
        self.safe = self.exchange_db(self.sx, "safe", "safe-copy")
        self.auditor = self.sx.createdb("auditor")
        dbinit.auditor_dbinit(self.auditor)
        tables = ", ".join(e.qualified for e in registry.REPLICATED)
        with psycopg.connect(self.primary, autocommit=True) as conn:
            conn.execute(f"CREATE PUBLICATION taler_pub FOR TABLE {tables} "
                         "WITH (publish = 'insert', publish_via_partition_root = true)")
        with psycopg.connect(self.ingres, autocommit=True) as conn:
            conn.execute(
                f"CREATE SUBSCRIPTION taler_sub CONNECTION 'host={self.px.sockets} "
                f"port={self.px.port} dbname=exchange user=postgres' PUBLICATION taler_pub "
                "WITH (disable_on_error = true)")
            # The initial copy of the (empty) tables, then off until the first increment.
            _wait(lambda: conn.execute("SELECT count(*) = 0 FROM pg_subscription_rel "
                                       "WHERE srsubstate <> 'r'").fetchone()[0], 600)
            conn.execute("ALTER SUBSCRIPTION taler_sub DISABLE")
        self.src_conf = _conf(os.path.join(self.tmp, "ingres.conf"), self.ingres)
        self.dst_conf = _conf(os.path.join(self.tmp, "safe.conf"), self.safe)

    def note(self, stage, k, rows, seconds, cpu, extra=""):
        self.rows.setdefault(stage, []).append((k, rows, seconds, cpu))
        rate = rows / seconds if seconds else float("inf")
        on_cpu = (f" {cpu:8.2f} cpu-s {rows / cpu:>10,.0f} rows/cpu-s" if cpu else "")
        print(f"  {stage:<8} {rows:>11,} rows {seconds:9.2f} s {rate:>11,.0f} rows/s{on_cpu}{extra}",
              flush=True)

    def timed(self, stage, k, fn, rows_of=None, extra=None):
        c0, t0 = self.cpu.seconds(), time.monotonic()
        out = fn()
        seconds = time.monotonic() - t0
        cpu = self.cpu.seconds() - c0 if c0 is not None else None
        rows = rows_of(out) if rows_of else out
        self.note(stage, k, rows, seconds, cpu, extra(out) if extra else "")
        return out

    # -- stages ------------------------------------------------------------------
    def generate(self, k, n):
        written = generator.bulk(self.primary, n, seed=SEED + k, keys=self.keys,
                                 signed=self.args.signed)
        return sum(written.values())

    @staticmethod
    def applied(primary, ingres, lsn):
        if not ingres.execute("SELECT subenabled FROM pg_subscription "
                              "WHERE subname = 'taler_sub'").fetchone()[0]:
            raise SystemExit("the subscription was disabled by an error: see the ingres log")
        return replication.slot_confirmed(primary, "taler_sub", lsn)

    def repl(self, k):
        with psycopg.connect(self.primary, autocommit=True) as conn:
            lsn = replication.current_wal_lsn(conn)
            with psycopg.connect(self.ingres, autocommit=True) as ing:
                ing.execute("ALTER SUBSCRIPTION taler_sub ENABLE")
                _wait(lambda: self.applied(conn, ing, lsn), 7200)
        with psycopg.connect(self.ingres, autocommit=True) as ing:
            ing.execute("ALTER SUBSCRIPTION taler_sub DISABLE")

    def analyze(self):
        """What autovacuum does sooner or later: statistics for the safe copy's grown tables."""
        with psycopg.connect(self.safe, autocommit=True) as conn:
            conn.execute("ANALYZE")

    def copied(self):
        with psycopg.connect(self.safe) as conn:
            return int(conn.execute("SELECT COALESCE(sum(rows_copied), 0) "
                                    "FROM taler_ops.sync_watermarks").fetchone()[0])

    def sync(self):
        """One ``sync -t`` subprocess; (rows copied, its peak RSS in MiB).

        The peak is VmHWM from /proc, sampled until the process ends: the rusage of
        a child (wait4) would also count what it held between fork and exec, i.e.
        this bench's own memory (the generator's state)."""
        before = self.copied()
        log = os.path.join(self.tmp, "sync.log")
        peak = [0]

        def sample(pid):
            while True:
                try:
                    # Not before the exec: until then /proc shows this bench's memory.
                    with open(f"/proc/{pid}/cmdline", "rb") as fh:
                        execed = b"taler_ops.cli" in fh.read()
                    if execed:
                        with open(f"/proc/{pid}/status") as fh:
                            for line in fh:
                                if line.startswith("VmHWM:"):
                                    peak[0] = max(peak[0], int(line.split()[1]))
                except OSError:
                    return
                if proc.poll() is not None:
                    return
                time.sleep(0.1)

        with open(log, "w") as fh:
            proc = subprocess.Popen(
                [sys.executable, "-m", "taler_ops.cli", "sync", "-s", self.src_conf,
                 "-d", self.dst_conf, "-t", "-b", str(self.args.batch)],
                stdout=fh, stderr=subprocess.STDOUT, cwd=ROOT)
            sampler = threading.Thread(target=sample, args=(proc.pid,))
            sampler.start()
            proc.wait()
            sampler.join()
        if proc.returncode != 0:
            with open(log) as fh:
                raise SystemExit(f"sync failed ({proc.returncode}):\n{fh.read()[-3000:]}")
        return self.copied() - before, peak[0] / 1024.0

    def run(self):
        self.started = time.monotonic()
        try:
            self._run()
        finally:
            # Also after an interruption (SIGTERM, ^C): the increments measured so far.
            if self.rss:
                self.summary(time.monotonic() - self.started)

    def _run(self):
        args = self.args
        step = args.rows // args.steps
        signed = "with" if args.signed else "WITHOUT"
        print(f"flavour {args.flavour}" + (f" (-P {args.partitions} on the primary)"
                                           if self.taler else "")
              + f"; {args.rows:,} rows in {args.steps} increments of {step:,}; "
              f"sync batch {args.batch}; generation {'signed' if args.signed else 'unsigned'}, "
              f"audit {signed} the signatures check; {os.cpu_count()} CPUs, "
              f"load {os.getloadavg()[0]:.2f}; CPU seconds "
              + (f"from cgroup {self.cpu.path}" if self.cpu.path else "not measured (no cgroup)"),
              flush=True)
        total = 0
        started = self.started
        for k in range(args.steps):
            full = k in (0, args.steps // 2 - 1, args.steps - 1)
            print(f"increment {k + 1}/{args.steps} (load {os.getloadavg()[0]:.2f}, "
                  f"{time.monotonic() - started:.0f} s in)", flush=True)
            n = self.timed("generate", k, lambda: self.generate(k, step))
            total += n
            self.timed("repl", k, lambda: (self.repl(k), n)[1])
            _, rss = self.timed("sync", k, self.sync, rows_of=lambda r: r[0],
                                extra=lambda r: f"  peak RSS {r[1]:.1f} MiB")
            self.rss.append((total, rss))
            if args.analyze:
                self.timed("analyze", k, lambda: (self.analyze(), n)[1])
            if full:
                rep = self.timed("verify", k, lambda: verify.verify(self.ingres, self.safe),
                                 rows_of=lambda r: sum(t["rows_checked"]
                                                       for t in r["tables"].values()),
                                 extra=lambda r: "  clean" if r["clean"] else
                                 f"  NOT CLEAN {r['summary']}")
                if not rep["clean"]:
                    raise SystemExit("verify found differences")
            currency = self.keys.ctx.currency
            report = self.timed("audit", k, lambda: audit.run(
                self.safe, self.auditor, currency=currency,
                signatures=self.keys.ctx if args.signed else None),
                rows_of=lambda r: r["rows_examined"],
                extra=lambda r: f"  findings {len(r['findings'])}")
            if report["findings"]:
                print(f"          first findings: {report['findings'][:3]}", flush=True)
            if full:
                def collect():
                    # As ``dbinit -g`` does: a taler-ops session (db.connect).
                    with db.connect(self.safe) as conn:
                        return gc.collect(conn)
                self.timed("gc", k, collect, rows_of=lambda r: total,
                           extra=lambda r: f"  deleted {sum(r['deleted'].values()):,}")
            self.disk(total)

    def disk(self, total):
        for name, uri in (("primary", self.primary), ("ingres", self.ingres),
                          ("safe", self.safe), ("auditor", self.auditor)):
            size = db_size(uri)
            print(f"          disk {name:<8} {size / 2**20:9.1f} MiB = "
                  f"{size / 2**20 / total * 1e6:8.1f} MiB per million rows", flush=True)

    def summary(self, seconds):
        print(f"\nsummary ({seconds / 60:.1f} min, load {os.getloadavg()[0]:.2f}): rate on the "
              "last increment / rate on the first (target >= 0.8)")
        for stage, runs in self.rows.items():
            (k0, r0, s0, c0), (k1, r1, s1, c1) = runs[0], runs[-1]
            a, b = r0 / s0, r1 / s1
            line = (f"  {stage:<8} increment {k0 + 1:>2} {a:>11,.0f} rows/s   increment {k1 + 1:>2} "
                    f"{b:>11,.0f} rows/s   ratio {b / a:5.2f}")
            if c0 and c1:
                line += (f"   per cpu-s {r0 / c0:>10,.0f} -> {r1 / c1:>10,.0f}   "
                         f"ratio {(r1 / c1) / (r0 / c0):5.2f}")
            print(line)
        (n0, rss0), (n1, rss1) = self.rss[0], self.rss[-1]
        print(f"  (first: database at {n0:,} rows; last: at {n1:,} rows)")
        print(f"  sync peak RSS at {n0:,} rows {rss0:.1f} MiB, at {n1:,} rows {rss1:.1f} MiB: "
              f"ratio {rss1 / rss0:.2f}")

    def close(self):
        for c in self.clusters:
            c.destroy()
        shutil.rmtree(self.tmp, ignore_errors=True)
        self.cpu.close()


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--rows", type=int, default=10_000_000, help="N (default 10,000,000)")
    ap.add_argument("--steps", type=int, default=10, help="increments (default 10)")
    ap.add_argument("--flavour", choices=["model", "taler"], default="model")
    ap.add_argument("-P", "--partitions", type=int, default=4,
                    help="partitions of the Taler-built primary (flavour taler; default 4)")
    ap.add_argument("--batch", type=int, default=20000, help="sync -b")
    ap.add_argument("--analyze", action="store_true",
                    help="ANALYZE the safe copy after each sync (a stage of its own)")
    ap.add_argument("--signed", action="store_true",
                    help="real signatures, and the audit checks them (10x slower generation)")
    args = ap.parse_args()
    signal.signal(signal.SIGTERM, signal.default_int_handler)
    bench = Bench(args)
    try:
        bench.setup()
        bench.run()
    finally:
        bench.close()


if __name__ == "__main__":
    main()
