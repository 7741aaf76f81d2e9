"""The sync daemon reacts to replicated rows without polling delay (issue 20, item 2).

The ingres' wake-up trigger (ENABLE ALWAYS row trigger, fired by the apply
worker) NOTIFYs once per applied transaction; the daemon LISTENs and starts a
pass at once.  The hint is untrusted: without it (trigger dropped on the
ingres) the daemon still polls, and fake notifications copy nothing they should not.
"""

import threading
import time

import psycopg
import pytest

from conftest import publish_replicated_tables, subscribe, wait_for
from consistency import same_tables
from pgcluster import Cluster
from taler_ops import sync
from taler_ops.schema import dbinit
from taler_ops.sim import generator
from taler_ops.sync import wakeup


@pytest.fixture
def topology(cluster):
    ex, ing = Cluster("wake-exchange").start(), Cluster("wake-ingres").start()
    try:
        exchange, ingres = ex.createdb("exchange"), ing.createdb("ingres")
        safe = cluster.createdb(f"wake_safe_{int(time.monotonic() * 1000)}")
        dbinit.exchange_dbinit(exchange)
        dbinit.exchange_dbinit(ingres, role="ingres")
        dbinit.exchange_dbinit(safe, role="safe-copy")
        publish_replicated_tables(exchange)
        subscribe(ingres, ex, "exchange")
        with psycopg.connect(ingres, autocommit=True) as conn:
            assert wakeup.install(conn)[1] > 0
            assert wakeup.install(conn)[1] == 0        # idempotent
        yield exchange, ingres, safe
    finally:
        ing.destroy()
        ex.destroy()


class Daemon:
    def __init__(self, src, dst, **kwargs):
        self.stop = threading.Event()
        self.passes = []
        self.result = None
        self.thread = threading.Thread(target=self._run, args=(src, dst), kwargs=kwargs,
                                       daemon=True)

    def _run(self, src, dst, **kwargs):
        self.result = sync.run_daemon(src, dst, stop=self.stop, on_pass=self._on_pass, **kwargs)

    def _on_pass(self, result):
        self.passes.append((time.monotonic(), result["copied"]))

    def __enter__(self):
        self.thread.start()
        return self

    def __exit__(self, *exc):
        self.stop.set()
        self.thread.join(timeout=60)
        assert not self.thread.is_alive()

    def idle(self):
        """An empty pass happened: the daemon now waits max_delay (or a hint)."""
        return bool(self.passes) and self.passes[-1][1] == 0


def test_daemon_wakes_on_replicated_rows_at_once(topology):
    exchange, ingres, safe = topology
    generator.bulk(exchange, 300, seed=1)
    with Daemon(ingres, safe, max_delay=120) as daemon:
        wait_for(lambda: same_tables(exchange, safe) is None, timeout=60)
        wait_for(daemon.idle)
        for seed in (2, 3):
            passes = len(daemon.passes)
            generator.bulk(exchange, 300, seed=seed)
            committed = time.monotonic()
            # Polling alone would wait 120 s here.
            wait_for(lambda: same_tables(exchange, safe) is None, timeout=20, interval=0.05)
            assert time.monotonic() - committed < 20
            wait_for(lambda: len(daemon.passes) > passes)   # on_pass runs after the commit
            wait_for(daemon.idle)
    assert daemon.result["hints"] >= 2


def test_polling_remains_when_hints_are_missing_or_fake(topology):
    exchange, ingres, safe = topology
    with psycopg.connect(ingres, autocommit=True) as conn:   # the untrusted side drops them
        conn.execute("DROP FUNCTION taler_ops.wake_sync() CASCADE")
    with Daemon(ingres, safe, max_delay=0.5) as daemon:
        generator.bulk(exchange, 300, seed=4)
        wait_for(lambda: same_tables(exchange, safe) is None, timeout=60)
        # Fake hints make passes, never copies of their own.
        with psycopg.connect(ingres, autocommit=True) as conn:
            for _ in range(50):
                conn.execute(f"NOTIFY {wakeup.CHANNEL}, 'exchange.reserves 999999'")
        passes = len(daemon.passes)
        wait_for(lambda: len(daemon.passes) > passes + 2)
        assert same_tables(exchange, safe) is None
        generator.bulk(exchange, 300, seed=5)
        wait_for(lambda: same_tables(exchange, safe) is None, timeout=60)
    assert daemon.result["passes"] >= 3


def test_no_wakeup_on_a_hot_standby_source_polls(cluster):
    """LISTEN is refused during recovery: WakeHints reports no hints, the daemon polls."""
    primary = Cluster("wake-primary").start()
    standby = Cluster("wake-standby")
    try:
        primary.createdb("exchange")
        standby.start_standby_of(primary)
        hints = sync.WakeHints(standby.uri("exchange"), threading.Event())
        assert not hints.live() and not hints.pending()
        started = time.monotonic()
        assert hints.wait(0.3) is False
        assert time.monotonic() - started >= 0.3
        hints.close()
    finally:
        standby.destroy()
        primary.destroy()
