"""taler-ops status (and its metrics) over a real exchange -> ingres -> safe copy chain."""

import json

import psycopg
import pytest

import builders as b
from conftest import wait_for
from taler_ops.ingres import replication
from taler_ops.monitor import metrics, status
from taler_ops.schema import dbinit


@pytest.fixture
def chain(replication_pair, cluster, conf, fresh_db):
    src, ingres_uri, ingres = replication_pair
    dbinit.exchange_dbinit(fresh_db, role="safe-copy")
    auditor = cluster.createdb(f"aud_{abs(hash(fresh_db)) % 10**8}")
    dbinit.auditor_dbinit(auditor)
    confs = {
        "pub": conf("pub.conf", {"exchangedb-postgres": {"CONFIG": src}}),
        "ing": conf("ingres.conf", {"exchangedb-postgres": {"CONFIG": ingres_uri}}),
        "safe": conf("safe.conf", {"exchangedb-postgres": {"CONFIG": fresh_db}}),
        "aud": conf("aud.conf", {"auditordb-postgres": {"CONFIG": auditor}}),
    }
    return src, ingres_uri, ingres, fresh_db, confs


def _replicated(src, ingres_uri):
    with psycopg.connect(src, autocommit=True) as conn:
        lsn = replication.current_wal_lsn(conn)
        wait_for(lambda: replication.slot_confirmed(conn, "taler_sub", lsn))


def _status(cli, confs, *extra):
    out = cli("status", "-p", confs["pub"], "--slot", "taler_sub", "-s", confs["ing"],
              "-d", confs["safe"], "-a", confs["aud"], "--json", *extra)
    assert out.returncode in (0, 1), out.stderr
    return out.returncode, json.loads(out.stdout)


def _sync(cli, confs):
    return cli("sync", "-s", confs["ing"], "-d", confs["safe"], "-t")


def test_status_follows_lag_halt_outage_and_recovery(cli, chain):
    src, ingres_uri, ingres, safe, confs = chain
    with psycopg.connect(src, autocommit=True) as conn:
        for i in range(3):
            b.wire_target(conn, f"t{i}")
    _replicated(src, ingres_uri)
    assert _sync(cli, confs).returncode == 0

    rc, report = _status(cli, confs)
    assert rc == 0 and report["healthy"], report["problems"]
    assert report["sync"]["tables"]["wire_targets"] == {
        "watermark": 3, "rows_copied": 3, "source_max": 3, "lag_rows": 0, "lag_seconds": 0.0,
        "open_holes": 0, "oldest_hole_seconds": None}
    assert report["publisher"]["slots"][0]["active"] is True
    assert report["ingres"]["subscriptions"][0]["worker_pid"]

    # The sync is not running: lag grows, and a threshold turns it into a problem.
    with psycopg.connect(src, autocommit=True) as conn:
        for i in range(5):
            b.wire_target(conn, f"u{i}")
    _replicated(src, ingres_uri)
    rc, report = _status(cli, confs)
    assert rc == 0 and report["sync"]["lag_rows"] == 5
    rc, report = _status(cli, confs, "--max-lag-rows", "4")
    assert rc == 1 and "sync lags 5 rows (limit 4)" in report["problems"]

    # A tampered ingres row halts the sync; status says where and why.
    with psycopg.connect(ingres_uri, autocommit=True) as conn:
        conn.execute("UPDATE exchange.wire_targets SET payto_uri = 'payto://evil/x' "
                     "WHERE wire_target_serial_id = 6")
    halted = _sync(cli, confs)
    assert halted.returncode == 1
    rc, report = _status(cli, confs)
    assert rc == 1 and report["sync"]["halted"] is True
    halt = report["sync"]["halt"]
    assert (halt["table_name"], halt["serial"]) == ("wire_targets", 6)
    assert any("sync halted: table=wire_targets serial=6" in p for p in report["problems"])
    text = metrics.render(status.collect(ingres_uri=ingres_uri, safe_uri=safe))
    assert "taler_ops_sync_halted 1.0" in text
    assert 'taler_ops_sync_lag_rows{table="wire_targets"} 5.0' in text
    assert 'taler_ops_sync_rows_copied_total{table="wire_targets"} 3.0' in text
    assert 'taler_ops_report_timestamp_seconds{parts="ingres+safe_copy"}' in text

    # Ingres down: reported, and the metrics say so too.
    ingres.stop()
    rc, report = _status(cli, confs)
    assert rc == 1 and report["ingres"]["instance"]["up"] is False
    assert "ingres database is down" in report["problems"]
    assert 'taler_ops_instance_up{instance="ingres"} 0.0' in metrics.render(
        status.collect(ingres_uri=ingres_uri))

    # Recovery: ingres back, the operator repairs the row, the sync resumes.
    ingres.start_existing()
    with psycopg.connect(ingres_uri, autocommit=True) as conn:
        conn.execute("UPDATE exchange.wire_targets SET payto_uri = 'payto://x-taler-bank/"
                     "bank.example/u2?receiver-name=u2' WHERE wire_target_serial_id = 6")
    assert _sync(cli, confs).returncode == 0
    rc, report = _status(cli, confs)
    assert rc == 0 and report["healthy"], report["problems"]
    assert report["sync"]["lag_rows"] == 0 and report["sync"]["halted"] is False
    # Unsuppressed rows per Taler report table, signature losses included.
    assert report["audit"]["findings"]["auditor_row_inconsistency"] == 0
    assert report["audit"]["findings"]["auditor_bad_sig_losses"] == 0


def test_status_metrics_textfile_and_human_table(cli, chain, tmp_path):
    _, _, _, _, confs = chain
    prom = tmp_path / "taler.prom"
    out = cli("status", "-s", confs["ing"], "-d", confs["safe"], "--table",
              "--metrics-textfile", prom)
    assert out.returncode == 0, out.stdout + out.stderr
    assert "ingres     up" in out.stdout and "healthy" in out.stdout
    body = prom.read_text()
    assert 'taler_ops_healthy{parts="ingres+safe_copy"} 1.0' in body
    assert 'taler_ops_subscription_worker_up{subscription="taler_sub"} 1.0' in body


def test_status_bad_arguments(cli, conf):
    assert cli("status").returncode == 2
    path = conf("x.conf", {"exchangedb-postgres": {"CONFIG": "postgresql:///x"}})
    assert cli("status", "-d", path).returncode == 2
    assert cli("status", "-s", "/nonexistent.conf").returncode == 6


def test_sync_daemon_writes_metrics_and_exports_its_halt(cluster, conf, tmp_path):
    import subprocess
    import sys
    from conftest import ROOT
    ingres, safe = cluster.createdb("metrics_ingres"), cluster.createdb("metrics_safe")
    dbinit.exchange_dbinit(ingres, role="ingres")
    dbinit.exchange_dbinit(safe, role="safe-copy")
    with psycopg.connect(ingres, autocommit=True) as conn:
        b.wire_target(conn, "m1")
    prom = tmp_path / "sync.prom"
    cmd = [sys.executable, "-m", "taler_ops.cli", "sync",
           "-s", conf("i.conf", {"exchangedb-postgres": {"CONFIG": ingres}}),
           "-d", conf("s.conf", {"exchangedb-postgres": {"CONFIG": safe}}),
           "--hole-horizon", "0", "--metrics-textfile", str(prom)]
    daemon = subprocess.Popen(cmd, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                              text=True)
    try:
        wait_for(lambda: prom.exists() and "taler_ops_sync_halted 0.0" in prom.read_text())
        assert 'taler_ops_instance_up{instance="ingres"} 1.0' in prom.read_text()
        with psycopg.connect(ingres, autocommit=True) as conn:
            conn.execute("INSERT INTO exchange.wire_targets (wire_target_serial_id, "
                         "wire_target_h_payto, payto_uri, h_normalized_payto) "
                         "VALUES (2, sha256('x'::bytea), 'payto://evil/y', sha256('y'::bytea))")
        _, err = daemon.communicate(timeout=60)
        assert daemon.returncode == 1 and "rule=derived-hash" in err
        body = prom.read_text()
        assert "taler_ops_sync_halted 1.0" in body
        assert 'taler_ops_sync_watermark{table="wire_targets"} 1.0' in body
    finally:
        if daemon.poll() is None:
            daemon.kill()
