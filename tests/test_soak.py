"""Soak with faults (issue 20, item 4).

Live exchange traffic (``generator.live``, signed rows) runs for N minutes
against a local topology this test starts itself: exchange primary ->
logical replication through a TCP proxy -> ingres (wake-up trigger, link
keeper ``taler-ops ingres-link``) -> ``taler-ops sync`` daemon under a
supervisor -> safe copy.  A chaos loop, at random (seeded, printed) intervals,
restarts each PostgreSQL instance (fast or immediate), SIGKILLs the sync
daemon (the supervisor restarts it), cuts the link, and runs the exchange's
GC on the primary (``taler-ops exchange-dbinit -g``).  After every fault it
waits until the safe copy holds everything the exchange had committed when
the fault was repaired (the recovery time).

At the end, traffic stopped and the safe copy caught up:
  * ingres and safe copy agree row for row (``verify`` finds nothing);
  * exchange vs safe copy: ``verify`` is clean, its only findings are rows
    Taler's GC rules explain (``deleted-gc``): no row the exchange still holds
    is missing or different on the safe copy;
  * the sync is not halted, the link keeper never saw an apply error;
  * the audit of the safe copy finds no inconsistency (deposits live traffic
    has not aggregated yet are pending, not inconsistencies).
It prints the worst freshness seen (exchange commit -> safe copy, sampled) and
the recovery times per fault kind.

``make test`` runs the 2-minute variant; ``make soak`` the long one
(TALER_OPS_SOAK_MINUTES, default 30).  TALER_OPS_SOAK_SEED replays a chaos
schedule; TALER_OPS_SOAK_RATE sets the traffic (rows/s, default 400).
"""

import collections
import os
import random
import shutil
import signal
import subprocess
import sys
import threading
import time
from types import SimpleNamespace

import psycopg
import pytest

from conftest import ROOT, publish_replicated_tables, subscribe, wait_for, write_conf
from consistency import same_tables
from pgcluster import Cluster
from tcpproxy import Proxy
from test_link_keeper import _state as keeper_state_of
from taler_ops import audit
from taler_ops.schema import dbinit, registry
from taler_ops.sim import generator
from taler_ops.sync import verify, wakeup
from taler_ops.crypto import keyring

MASTER = 4242                       # one exchange master key for every traffic session
RATE = int(os.environ.get("TALER_OPS_SOAK_RATE", "400"))
RECOVERY_TIMEOUT = 180
MAX_SERIALS = " UNION ALL ".join(
    f"SELECT '{e.name}', COALESCE(max({e.serial}), 0) FROM {e.qualified}"
    for e in registry.REPLICATED)
FAULTS = ("restart-exchange", "restart-ingres", "restart-safe-copy", "kill-sync", "cut-link",
          "gc")


def _max_serials(uri):
    with psycopg.connect(uri, autocommit=True, connect_timeout=3) as conn:
        return {t: s for t, s in conn.execute(MAX_SERIALS).fetchall() if s}


def _watermarks(uri):
    with psycopg.connect(uri, autocommit=True, connect_timeout=3) as conn:
        return dict(conn.execute(
            "SELECT table_name, last_serial FROM taler_ops.sync_watermarks").fetchall())


def _covered(marks, serials):
    return all(marks.get(t, 0) >= s for t, s in serials.items())


def _newer(serials, than):
    """``serials`` when some table moved past ``than``."""
    return serials if serials and any(s > than.get(t, 0) for t, s in serials.items()) else None


def _try(fn, *args):
    try:
        return fn(*args)
    except psycopg.Error:
        return None


class Traffic(threading.Thread):
    """Sessions of ``generator.live`` until stopped; a failed session (the exchange
    restarted under it, a GC deadlock) is replaced by a new one with the next seed."""

    def __init__(self, exchange, rate, seed):
        super().__init__(daemon=True)
        self.exchange, self.rate, self.seed = exchange, rate, seed
        self.stop = threading.Event()
        self.sessions = self.failed = self.rows = self.gc_runs = 0
        self.errors = collections.Counter()

    def run(self):
        while not self.stop.is_set():
            self.seed += 1
            try:
                stats = generator.live(self.exchange, self.rate, 20, seed=self.seed,
                                       gc_every=15, keys=keyring.Keyring(self.seed, master=MASTER),
                                      progress=self._progress)
                self.sessions += 1
                self.rows += sum(stats["inserted"].values())
                self.gc_runs += stats["gc_runs"]
            except Exception as exc:       # the exchange is down or restarting
                self.failed += 1
                self.errors[type(exc).__name__] += 1
                self.stop.wait(0.3)

    def _progress(self, counts, elapsed):
        if self.stop.is_set():
            raise _Stopped()


class _Stopped(Exception):
    pass


class Supervisor(threading.Thread):
    """Runs the sync daemon as systemd's Restart=always would (RestartSec=1)."""

    def __init__(self, cmd, log):
        super().__init__(daemon=True)
        self.cmd, self.log = cmd, log
        self.stop = threading.Event()
        self.lock = threading.Lock()
        self.proc = None
        self.exits = []             # (returncode, killed by the chaos loop)
        self.killing = False

    def _spawn(self):
        with open(self.log, "a") as err:
            self.proc = subprocess.Popen(self.cmd, cwd=ROOT, stdout=subprocess.DEVNULL,
                                         stderr=err)

    def run(self):
        with self.lock:
            self._spawn()
        while not self.stop.is_set():
            if self.proc.poll() is not None:
                with self.lock:
                    self.exits.append((self.proc.returncode, self.killing))
                    self.killing = False
                if self.stop.wait(1.0):
                    return
                with self.lock:
                    self._spawn()
            self.stop.wait(0.1)

    def kill(self):
        with self.lock:
            self.killing = True
            self.proc.send_signal(signal.SIGKILL)

    def finish(self):
        self.stop.set()
        self.join(timeout=30)
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            self.proc.wait(timeout=60)
            self.exits.append((self.proc.returncode, False))


class Freshness(threading.Thread):
    """Samples the exchange's highest serials and the safe copy's watermarks:
    per sample, the delay until the safe copy covered it."""

    def __init__(self, exchange, safe, every=0.5):
        super().__init__(daemon=True)
        self.exchange, self.safe, self.every = exchange, safe, every
        self.stop = threading.Event()
        self.pending, self.delays = [], []

    def run(self):
        last = {}
        while not self.stop.is_set():
            now = time.monotonic()
            serials = _try(_max_serials, self.exchange)
            if serials and serials != last:
                self.pending.append((now, serials))
                last = serials
            marks = _try(_watermarks, self.safe)
            if marks is not None:
                seen = time.monotonic()
                keep = []
                for t0, s in self.pending:
                    if _covered(marks, s):
                        self.delays.append(seen - t0)
                    else:
                        keep.append((t0, s))
                self.pending = keep
            self.stop.wait(self.every)

    def worst(self):
        return max(self.delays, default=0.0)


def _topology(tmp_path):
    # The exchange commits synchronously, as a real one does (see bench_freshness.py).
    ex = Cluster("soak-exchange", settings={"synchronous_commit": "on"}).start()
    ing = Cluster("soak-ingres", settings={"wal_retrieve_retry_interval": "200ms"}).start()
    sc = Cluster("soak-safe").start()
    exchange, ingres, safe = ex.createdb("exchange"), ing.createdb("ingres"), sc.createdb("safe")
    auditor = sc.createdb("auditor")
    dbinit.exchange_dbinit(exchange)
    dbinit.exchange_dbinit(ingres, role="ingres")
    dbinit.exchange_dbinit(safe, role="safe-copy")
    dbinit.auditor_dbinit(auditor)
    publish_replicated_tables(exchange)
    proxy = Proxy("127.0.0.1", ex.port).start()
    # taler_sub to the exchange through the proxy, as roles/ingres makes it.
    subscribe(ingres, SimpleNamespace(sockets="127.0.0.1", port=proxy.port), "exchange")
    with psycopg.connect(ingres, autocommit=True) as conn:
        assert wakeup.install(conn)[1] > 0
    confs = {name: write_conf(tmp_path / f"{name}.conf", {"exchangedb-postgres": {"CONFIG": uri}})
             for name, uri in (("exchange", exchange), ("ingres", ingres), ("safe", safe))}
    return (ex, ing, sc), (exchange, ingres, safe, auditor), proxy, confs


def soak(tmp_path, minutes, seed):
    rng = random.Random(seed)
    print(f"\nsoak: {minutes:g} min, chaos seed {seed}, traffic {RATE} rows/s", flush=True)
    clusters, (exchange, ingres, safe, auditor), proxy, confs = _topology(tmp_path)
    ex, ing, sc = clusters
    victims = {"restart-exchange": ex, "restart-ingres": ing, "restart-safe-copy": sc}
    keeper_log, sync_log = tmp_path / "keeper.log", tmp_path / "sync.log"
    keeper_state = tmp_path / "link.json"
    keeper = subprocess.Popen(
        [sys.executable, "-m", "taler_ops.cli", "-L", "INFO", "ingres-link", "-c",
         confs["ingres"], "--interval", "0.2", "--stable", "5", "--retry", "0.5",
         "--max-strikes", "5", "--state", str(keeper_state)],
        cwd=ROOT, stdout=subprocess.DEVNULL, stderr=open(keeper_log, "w"))
    supervisor = Supervisor([sys.executable, "-m", "taler_ops.cli", "-L", "INFO", "sync",
                             "-s", confs["ingres"], "-d", confs["safe"], "-b", "5000",
                             "--max-delay", "2", "--hole-horizon", "10"], sync_log)
    traffic = Traffic(exchange, RATE, seed * 1000)
    fresh = Freshness(exchange, safe)
    recovery = collections.defaultdict(list)
    injected = collections.Counter()
    gc_deleted = collections.Counter()
    started = time.monotonic()
    try:
        supervisor.start()
        traffic.start()
        fresh.start()
        end = started + minutes * 60
        schedule = []
        # Until the time is up, and at least one round of every fault kind.
        while time.monotonic() < end or sum(injected.values()) < len(FAULTS):
            if not schedule:                        # every kind once per round
                schedule = list(FAULTS)
                rng.shuffle(schedule)
            traffic.stop.wait(rng.uniform(2, 8))
            kind = schedule.pop()
            if kind in victims:
                mode = rng.choice(("fast", "immediate"))
                victims[kind].stop(mode)
                traffic.stop.wait(rng.uniform(0, 2))
                victims[kind].start_existing()
                kind_seen = f"{kind} ({mode})"
            elif kind == "kill-sync":
                supervisor.kill()
                kind_seen = kind
            elif kind == "cut-link":
                proxy.cut()
                traffic.stop.wait(rng.uniform(0.5, 4))
                proxy.restore()
                kind_seen = kind
            else:
                done = subprocess.run([sys.executable, "-m", "taler_ops.cli", "exchange-dbinit",
                                       "-c", confs["exchange"], "-g"], cwd=ROOT,
                                      capture_output=True, text=True, timeout=300)
                assert done.returncode == 0, done.stderr
                kind_seen = kind
            repaired = time.monotonic()
            injected[kind] += 1
            # Recovered: the safe copy holds what the exchange had committed at the repair.
            target = wait_for(lambda: _try(_max_serials, exchange), timeout=60, interval=0.1)
            wait_for(lambda: _covered(_try(_watermarks, safe) or {}, target),
                     timeout=RECOVERY_TIMEOUT, interval=0.1)
            took = time.monotonic() - repaired
            # Flowing again: a transaction committed after the repair reaches the safe
            # copy (after an exchange restart this includes the traffic reconnecting).
            newer = wait_for(lambda: _newer(_try(_max_serials, exchange), target),
                             timeout=RECOVERY_TIMEOUT, interval=0.1)
            wait_for(lambda: _covered(_try(_watermarks, safe) or {}, newer),
                     timeout=RECOVERY_TIMEOUT, interval=0.1)
            flowing = time.monotonic() - repaired
            recovery[kind].append((took, flowing))
            print(f"  t={repaired - started:7.1f}s {kind_seen:<28} caught up {took:6.2f} s, "
                  f"new commits arrive {flowing:6.2f} s after the repair", flush=True)
    finally:
        traffic.stop.set()
        traffic.join(timeout=120)
    try:
        assert not traffic.is_alive()
        traffic_s = time.monotonic() - started
        # Caught up: ingres has everything the exchange has, the safe copy everything
        # ingres has (polled, no fixed sleep).
        final = _max_serials(exchange)
        wait_for(lambda: _covered(_try(_max_serials, ingres) or {}, final), timeout=300)
        wait_for(lambda: _covered(_try(_watermarks, safe) or {}, _max_serials(ingres)),
                 timeout=300, interval=0.2)
        wait_for(lambda: not fresh.pending, timeout=60)
        fresh.stop.set()
        fresh.join(timeout=30)

        # Ingres and safe copy: identical.
        assert same_tables(ingres, safe) is None
        between = verify.verify(ingres, safe)
        assert between["clean"] and between["findings"] == [], between["summary"]
        # Exchange and safe copy: nothing but rows GC deleted on the exchange.
        whole = verify.verify(exchange, safe)
        assert whole["clean"], (whole["summary"], whole["findings"][:5])
        assert set(whole["summary"]) <= {"deleted-gc"}, whole["summary"]
        with psycopg.connect(exchange) as e, psycopg.connect(safe) as s:
            for entry in registry.REPLICATED:
                q = f"SELECT COALESCE(max({entry.serial}), 0) FROM {entry.qualified}"
                assert (s.execute(q).fetchone()[0] >= e.execute(q).fetchone()[0]), entry.name
        for kind, n in whole["summary"].items():
            gc_deleted[kind] += n

        # The sync never halted; the link keeper never saw an apply error.
        with psycopg.connect(safe) as conn:
            halts = conn.execute("SELECT table_name, serial, rule, message FROM "
                                 "taler_ops.sync_halts WHERE cleared_tsz IS NULL").fetchall()
        assert halts == []
        # A subscription the keeper enabled last is "healing" until its origin moved or
        # --stable (5 s) passed: wait for its verdict.
        wait_for(lambda: (keeper_state_of(keeper_state) or {}).get("phase") == "healthy",
                 timeout=60)

        # The audit of the safe copy: no inconsistency.
        report = audit.run(safe, auditor, currency="KUDOS",
                           signatures=keyring.Keyring(MASTER, master=MASTER).ctx)
        examined = sum(sum(c["rows_examined"].values()) for c in report["checks"].values())
        inconsistencies = [f for f in report["findings"]
                           if f.get("kind") != "deposit_aggregation_lag"]
        assert examined > 0
        assert not any(c.get("skipped") for c in report["checks"].values()), report["checks"]
        assert sum(report["checks"]["signatures"]["rows_examined"].values()) > 0
        with psycopg.connect(ingres) as conn:       # insert-only: everything committed
            committed = sum(conn.execute(f"SELECT count(*) FROM {e.qualified}").fetchone()[0]
                            for e in registry.REPLICATED)
        assert inconsistencies == [], inconsistencies[:5]
    finally:
        supervisor.finish()
        keeper.send_signal(signal.SIGTERM)
        keeper.wait(timeout=60)
        proxy.cut()
        for c in clusters:
            c.stop()
            if os.path.exists(c.log):     # kept beside keeper.log and sync.log
                shutil.copy(c.log, tmp_path / f"{c.name}.log")
            c.destroy()
    keeper_err = keeper_log.read_text()
    assert "event=stuck" not in keeper_err
    # Link cuts disabled the subscription (PostgreSQL 15's disable_on_error); the keeper
    # enabled it again each time, no one else did.
    enabled = keeper_err.count("action=enabled")
    assert enabled >= 1, keeper_err[-3000:]
    # Every exit of the sync daemon was one the chaos loop caused, or the final SIGTERM.
    unexpected = [rc for rc, killed in supervisor.exits[:-1] if not killed]
    assert unexpected == [], (unexpected, sync_log.read_text()[-3000:])
    assert supervisor.exits[-1][0] == 0

    print(f"soak done: {traffic_s:.0f} s of traffic, {committed} rows committed by the exchange "
          f"({committed / traffic_s:.0f} rows/s), {traffic.sessions} traffic sessions ran to "
          f"their end, {traffic.failed} were cut short or refused ({dict(traffic.errors)}), "
          f"{traffic.gc_runs} GC runs inside the traffic", flush=True)
    print(f"  faults injected: {sum(injected.values())} {dict(injected)}; the link keeper "
          f"enabled the subscription {enabled} time(s)")
    print(f"  worst freshness (exchange commit -> safe copy, {len(fresh.delays)} samples): "
          f"{fresh.worst():.2f} s; median {sorted(fresh.delays)[len(fresh.delays) // 2]:.2f} s")
    for kind in FAULTS:
        times = recovery.get(kind, [])
        if times:
            up, flow = [t for t, _ in times], [f for _, f in times]
            print(f"  recovery after {kind:<18} n={len(times):>3}  caught up max {max(up):6.2f} s "
                  f"mean {sum(up) / len(up):5.2f} s;  new commits arrive max {max(flow):6.2f} s "
                  f"mean {sum(flow) / len(flow):5.2f} s")
    print(f"  verify exchange vs safe copy: {dict(gc_deleted) or 'no GC deletions'}; "
          f"audit examined {examined} rows, {len(report['findings'])} pending finding(s)",
          flush=True)
    return {"injected": injected, "recovery": recovery, "worst": fresh.worst()}


def _seed():
    env = os.environ.get("TALER_OPS_SOAK_SEED")
    return int(env) if env else random.SystemRandom().randrange(1, 10**6)


@pytest.mark.soak
def test_soak_two_minutes(tmp_path):
    result = soak(tmp_path, 2, _seed())
    assert sum(result["injected"].values()) >= len(FAULTS)


@pytest.mark.soak
@pytest.mark.soak_long
def test_soak_long(tmp_path):
    minutes = float(os.environ.get("TALER_OPS_SOAK_MINUTES", "30"))
    result = soak(tmp_path, minutes, _seed())
    assert set(result["injected"]) == set(FAULTS)
