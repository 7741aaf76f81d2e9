"""The self-healing replication link (issue 20, item 1).

Link cuts and exchange restarts under live traffic: the ingres subscription
(``disable_on_error = true``) comes back with no manual step and no row lost,
because ``taler-ops ingres-link`` re-enables what a transport failure disabled.
A planted apply error (a row the ingres copy refuses) still stops replication,
and status reports it.  A subscription an operator disabled is left alone.
A hot standby reconnects by itself (no keeper needed).
"""

import json
import os
import signal
import subprocess
import sys
import threading

import psycopg

from conftest import ROOT, caught_up, publish_replicated_tables, wait_for
from consistency import same_tables
from pgcluster import Cluster
from tcpproxy import Proxy
from taler_ops.ingres import link, replication
from taler_ops.schema import dbinit
from taler_ops.sim import generator

SUB = "taler_sub"
# Quick reconnects of the apply worker / WAL receiver (default 5 s) keep the test short.
FAST_RETRY = {"wal_retrieve_retry_interval": "200ms"}


def _sub(ingres):
    with psycopg.connect(ingres, autocommit=True) as conn:
        return [r for r in link.read_subscriptions(conn) if r["subname"] == SUB][0]


class Traffic:
    """Exchange transactions in a loop until stopped; a restarted exchange is waited out."""

    def __init__(self, exchange, rows=200):
        self.exchange, self.rows = exchange, rows
        self.stop = threading.Event()
        self.committed = self.failed = 0
        self.errors = []
        self.thread = threading.Thread(target=self._run, daemon=True)

    def _run(self):
        seed = 100
        while not self.stop.is_set():
            seed += 1
            try:
                generator.bulk(self.exchange, self.rows, seed=seed)
                self.committed += 1
            except Exception as exc:   # the exchange is down or restarting
                self.failed += 1
                self.errors.append(str(exc).splitlines()[0] if str(exc) else repr(exc))
                self.stop.wait(0.1)

    def __enter__(self):
        self.thread.start()
        return self

    def __exit__(self, *exc):
        self.stop.set()
        self.thread.join(timeout=120)


def _keeper(conf, state, *extra):
    cmd = [sys.executable, "-m", "taler_ops.cli", "-L", "INFO", "ingres-link", "-c", conf,
           "--interval", "0.1", "--stable", "5", "--retry", "0.3", "--max-strikes", "3",
           "--state", str(state), *extra]
    return subprocess.Popen(cmd, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True)


def _state(path):
    try:
        with open(path) as fh:
            report = json.load(fh)
    except (OSError, ValueError):
        return None
    subs = [s for s in report["subscriptions"].values() if s["name"] == SUB]
    return dict(subs[0], checks=report["checks"]) if subs else None


def _phase(path, *phases):
    def check():
        st = _state(path)
        return st if st and st["phase"] in phases else None
    return check


def _stop_keeper(proc):
    proc.send_signal(signal.SIGTERM)
    out, err = proc.communicate(timeout=30)
    assert proc.returncode == 0, err
    return err


def _topology(own_cluster, tmp_path, conf, tag):
    ex = own_cluster(f"{tag}-exchange")
    ing = own_cluster(f"{tag}-ingres", **FAST_RETRY)
    exchange, ingres = ex.createdb("exchange"), ing.createdb("ingres")
    dbinit.exchange_dbinit(exchange)
    dbinit.exchange_dbinit(ingres, role="ingres")
    publish_replicated_tables(exchange)
    proxy = Proxy("127.0.0.1", ex.port).start()
    with psycopg.connect(ingres, autocommit=True) as conn:
        conn.execute(f"CREATE SUBSCRIPTION {SUB} CONNECTION 'host=127.0.0.1 port={proxy.port} "
                     "dbname=exchange user=postgres connect_timeout=2' PUBLICATION taler_pub "
                     "WITH (disable_on_error = true)")
        wait_for(lambda: conn.execute(
            "SELECT count(*) = 0 FROM pg_subscription_rel WHERE srsubstate <> 'r'").fetchone()[0],
            timeout=120)
    ingres_conf = conf(f"{tag}-ingres.conf", {"exchangedb-postgres": {"CONFIG": ingres}})
    return ex, ing, exchange, ingres, proxy, ingres_conf


def _resumed(ingres, after_origin, timeout=60):
    """Replication applies transactions again: enabled, and the origin moved past ``after_origin``."""
    def moving():
        s = _sub(ingres)
        return s["subenabled"] and s["origin"] > after_origin and s
    return wait_for(moving, timeout=timeout, interval=0.1)


def test_cuts_and_exchange_restarts_under_traffic_heal_without_loss(own_cluster, tmp_path,
                                                                    conf, cli):
    ex, ing, exchange, ingres, proxy, ingres_conf = _topology(own_cluster, tmp_path, conf, "heal")
    state = tmp_path / "link.json"
    keeper = _keeper(ingres_conf, state)
    try:
        wait_for(_phase(state, "healthy"))
        with Traffic(exchange) as traffic:
            for _ in range(3):
                # The link is cut: PostgreSQL disables the subscription (an error is counted).
                before = _sub(ingres)
                _resumed(ingres, before["origin"])
                before = _sub(ingres)
                proxy.cut()
                wait_for(lambda: _sub(ingres)["errors"] > before["errors"], interval=0.05)
                proxy.restore()
                _resumed(ingres, before["origin"])
                # The exchange restarts (fast shutdown ends every walsender).
                before = _sub(ingres)
                ex.stop("fast")
                ex.start_existing()
                _resumed(ingres, before["origin"])
                # ... and once more hard, with no goodbye to the walsenders.
                before = _sub(ingres)
                ex.stop("immediate")
                ex.start_existing()
                _resumed(ingres, before["origin"])
        assert traffic.committed >= 6, traffic.errors
        caught_up(exchange)
        final = _sub(ingres)
        assert final["subenabled"] and final["errors"] >= 3
        assert same_tables(exchange, ingres) is None       # no row lost
        st = wait_for(_phase(state, "healthy"))
        assert st["strikes"] == 0
        ing_conf = conf("s.conf", {"exchangedb-postgres": {"CONFIG": ingres}})
        report = json.loads(cli("status", "-s", ing_conf, "--json").stdout)
        assert not any("disabled" in p for p in report["problems"]), report["problems"]
    finally:
        proxy.cut()
        err = _stop_keeper(keeper)
    assert "event=healing" in err and "action=enabled" in err
    assert "event=stuck" not in err


def test_a_planted_apply_error_stays_stopped_and_reported(own_cluster, tmp_path, conf, cli):
    ex, ing, exchange, ingres, proxy, ingres_conf = _topology(own_cluster, tmp_path, conf, "stuck")
    state = tmp_path / "link.json"
    keeper = _keeper(ingres_conf, state, "--stuck-retry", "0")
    try:
        wait_for(_phase(state, "healthy"))
        generator.bulk(exchange, 500, seed=1)
        caught_up(exchange)
        # The ingres copy refuses every new reserve: a deterministic apply error.
        with psycopg.connect(ingres, autocommit=True) as conn:
            conn.execute("ALTER TABLE exchange.reserves ADD CONSTRAINT planted CHECK (false) "
                         "NOT VALID")
        generator.bulk(exchange, 500, seed=2)
        st = wait_for(_phase(state, "stuck"), timeout=60)
        assert st["strikes"] == 3
        sub = _sub(ingres)
        assert not sub["subenabled"]
        assert sub["errors"] >= 4        # the first failure and three quick ones
        # It stays stopped: the keeper keeps checking and never enables it again.
        checks = st["checks"]
        wait_for(lambda: _state(state)["checks"] >= checks + 20)
        assert not _sub(ingres)["subenabled"] and _sub(ingres)["errors"] == sub["errors"]
        ing_conf = conf("s.conf", {"exchangedb-postgres": {"CONFIG": ingres}})
        report = json.loads(cli("status", "-s", ing_conf, "--json").stdout)
        assert not report["healthy"]
        assert any(f"subscription {SUB} is disabled" in p for p in report["problems"])
        once = cli("ingres-link", "-c", ingres_conf, "--once", "--state", str(state))
        assert once.returncode == 1 and SUB in once.stdout

        # The operator repairs the ingres and enables it: nothing was lost meanwhile.
        with psycopg.connect(ingres, autocommit=True) as conn:
            conn.execute("ALTER TABLE exchange.reserves DROP CONSTRAINT planted")
            conn.execute(f"ALTER SUBSCRIPTION {SUB} ENABLE")
        caught_up(exchange)
        assert same_tables(exchange, ingres) is None
        wait_for(_phase(state, "healthy"))
    finally:
        proxy.cut()
        err = _stop_keeper(keeper)
    assert "event=stuck" in err


def test_an_operator_disabled_subscription_is_left_alone(own_cluster, tmp_path, conf):
    ex, ing, exchange, ingres, proxy, ingres_conf = _topology(own_cluster, tmp_path, conf, "op")
    state = tmp_path / "link.json"
    keeper = _keeper(ingres_conf, state)
    try:
        wait_for(_phase(state, "healthy"))
        with psycopg.connect(ingres, autocommit=True) as conn:
            conn.execute(f"ALTER SUBSCRIPTION {SUB} DISABLE")   # e.g. upgrade.yml's drain
        st = wait_for(_phase(state, "operator-disabled"))
        wait_for(lambda: _state(state)["checks"] >= st["checks"] + 20)
        assert not _sub(ingres)["subenabled"]
        # A link cut while disabled changes nothing; enabling by hand is seen as healthy.
        with psycopg.connect(ingres, autocommit=True) as conn:
            conn.execute(f"ALTER SUBSCRIPTION {SUB} ENABLE")
        wait_for(_phase(state, "healthy"))
        generator.bulk(exchange, 300, seed=3)
        caught_up(exchange)
        assert same_tables(exchange, ingres) is None
    finally:
        proxy.cut()
        _stop_keeper(keeper)


def test_hot_standby_reconnects_by_itself(own_cluster, tmp_path):
    """Streaming: the WAL receiver retries every wal_retrieve_retry_interval; nothing to keep."""
    primary = own_cluster("hs-primary")
    exchange = primary.createdb("exchange")
    dbinit.exchange_dbinit(exchange, role="primary")
    standby = Cluster("hs-standby", settings=FAST_RETRY)
    try:
        standby.start_standby_of(primary, slot="hs_slot")
        proxy = Proxy("127.0.0.1", primary.port).start()
        with psycopg.connect(standby.uri(), autocommit=True) as conn:
            conn.execute("ALTER SYSTEM SET primary_conninfo = "
                         f"'host=127.0.0.1 port={proxy.port} user=postgres connect_timeout=2'")
            conn.execute("SELECT pg_reload_conf()")
        standby_db = standby.uri("exchange")

        def streaming_via_proxy():
            with psycopg.connect(standby.uri(), autocommit=True) as conn:
                row = conn.execute("SELECT status, sender_port FROM pg_stat_wal_receiver").fetchone()
                return row == ("streaming", proxy.port)
        wait_for(streaming_via_proxy, timeout=60)

        def replayed():
            with psycopg.connect(exchange, autocommit=True) as p, \
                    psycopg.connect(standby_db, autocommit=True) as s:
                lsn = replication.current_wal_lsn(p)
                wait_for(lambda: replication.standby_replayed(s, lsn), timeout=60)
        try:
            with Traffic(exchange) as traffic:
                for _ in range(2):
                    proxy.cut()
                    committed = traffic.committed
                    wait_for(lambda: traffic.committed >= committed + 2)   # writes go on
                    proxy.restore()
                    wait_for(streaming_via_proxy, timeout=60)
                    primary.stop("fast")
                    primary.start_existing()
                    wait_for(streaming_via_proxy, timeout=60)
            assert traffic.committed >= 4, traffic.errors
            replayed()
            assert same_tables(exchange, standby_db) is None
        finally:
            proxy.cut()
    finally:
        standby.destroy()
    assert os.path.exists(primary.data)


def test_once_with_its_state_heals_a_cut_seen_between_runs(own_cluster, tmp_path, conf, cli):
    """The timer mode: --once rounds remember the baseline in --state; without it, a
    subscription found disabled is of unknown cause and left alone."""
    ex, ing, exchange, ingres, proxy, ingres_conf = _topology(own_cluster, tmp_path, conf, "once")
    state = tmp_path / "link.json"
    try:
        first = cli("ingres-link", "-c", ingres_conf, "--once", "--state", str(state), "--json")
        assert first.returncode == 0, first.stderr
        assert _state(state)["phase"] == "healthy"
        before = _sub(ingres)
        proxy.cut()           # no keeper runs now: PostgreSQL disables the subscription
        wait_for(lambda: not _sub(ingres)["subenabled"]
                 and _sub(ingres)["errors"] > before["errors"])
        proxy.restore()
        generator.bulk(exchange, 300, seed=7)

        blind = cli("ingres-link", "-c", ingres_conf, "--once", "--state", str(tmp_path / "new"))
        assert blind.returncode == 0 and "event=unknown" in blind.stderr
        assert not _sub(ingres)["subenabled"]

        again = cli("ingres-link", "-c", ingres_conf, "--once", "--state", str(state))
        assert again.returncode == 0, again.stderr
        assert "action=enabled" in again.stderr
        _resumed(ingres, before["origin"])
        caught_up(exchange)
        assert same_tables(exchange, ingres) is None
    finally:
        proxy.cut()
