"""The audit as operators run it: the CLI (report, exit codes, kill -9 mid-run, the
daemon), the Ansible module and playbooks/internal-audit.yml."""

import json
import os
import signal
import subprocess
import sys
import time

import psycopg

from audit_helpers import auditor_flavour, dbs, hist  # noqa: F401 (fixtures)
from audit_helpers import NOW, _conf, all_findings, found, progress, q, run, stored
from audit_history import T0, YEAR
from conftest import wait_for
from taler_build import require_taler_sql
from taler_ops import audit


# -- CLI -------------------------------------------------------------------------------------------

def test_cli_findings_exit_0_with_report_and_summary(dbs, hist, conf, cli, tmp_path):
    d = hist.denomination()
    _, uuid, _ = hist.reserve("1")
    over = hist.withdraw(uuid, d, "1.01")
    report_path = tmp_path / "report.json"
    res = cli("audit", "-c", _conf(conf, dbs), "-t", "--report", report_path,
              "--now", NOW)
    assert res.returncode == 0, res.stderr
    assert "new findings: reserve_balance_insufficient 1" in res.stdout
    report = json.loads(report_path.read_text())
    assert found(report) == [("reserve_balance_insufficient", "reserves_out", over)]
    assert report["findings"][0]["inconsistency_amount"] == "KUDOS:0.01"
    res = cli("audit", "-c", _conf(conf, dbs), "-t", "--report", "-")
    assert res.returncode == 0 and json.loads(res.stdout)["findings"] == []


def test_cli_failures_of_the_audit_itself(dbs, cluster, conf, cli):
    fresh = cluster.createdb(f"noaud_{os.getpid()}_{time.monotonic_ns() % 10**6}")
    path = conf("x.conf", {"exchangedb-postgres": {"CONFIG": dbs[0]},
                           "auditordb-postgres": {"CONFIG": fresh}})
    res = cli("audit", "-c", path, "-t")
    assert res.returncode == 5 and "auditor database" in res.stderr
    res = cli("audit", "-c", conf("y.conf", {"exchangedb-postgres": {"CONFIG": dbs[0]}}), "-t")
    assert res.returncode == 6 and "auditordb-postgres" in res.stderr
    # A second audit while one holds the auditor database.
    with audit.Audit(dbs[0], dbs[1]):
        res = cli("audit", "-c", _conf(conf, dbs), "-t")
    assert res.returncode == 1 and "another audit is running" in res.stderr


def test_crash_mid_run_leaves_progress_and_findings_consistent(dbs, hist, cluster, conf, tmp_path):
    """kill -9 while the coins check waits inside its transaction; the rerun is complete."""
    d = hist.denomination(coin="1")
    _, uuid, _ = hist.reserve("1")
    over_w = hist.withdraw(uuid, d, "1.01")
    coin = hist.coin(d)
    hist.deposit(coin, "0.6")
    _, over_d = hist.deposit(coin, "0.6")
    expected = sorted([("reserve_balance_insufficient", "reserves_out", over_w),
                       ("coin_overspent", "coin_deposits", over_d),
                       # the denomination's only coin overspent: an emergency by value
                       ("emergency", None, None)])
    blocker = psycopg.connect(dbs[1])
    blocker.execute("LOCK TABLE auditor.auditor_coin_inconsistency IN ACCESS EXCLUSIVE MODE")
    proc = subprocess.Popen([sys.executable, "-m", "taler_ops.cli", "audit", "-c",
                             _conf(conf, dbs), "-t", "--now", str(NOW)],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    try:
        wait_for(lambda: q(cluster.uri(), "SELECT count(*) FROM pg_stat_activity WHERE "
                           "application_name = 'taler-ops' AND wait_event_type = 'Lock'")[0][0],
                 timeout=60, interval=0.05, what="the audit waiting on the coins findings' lock")
        # The reserves check has committed; the coins check is mid-transaction.
        assert q(dbs[1], "SELECT count(*) FROM "
                         "auditor.auditor_reserve_balance_insufficient_inconsistency") == [(1,)]
        proc.send_signal(signal.SIGKILL)
        proc.wait()
    finally:
        blocker.rollback()
        blocker.close()
    prog = progress(dbs[1])
    assert prog["reserves_reserve_out_serial_id"] == over_w + 1
    assert "coins_deposit_serial_id" not in prog, "the killed check committed nothing"
    assert q(dbs[1], "SELECT count(*) FROM taler_ops.audit_coins") == [(0,)]
    rerun = run(dbs)
    assert found(rerun) == [("coin_overspent", "coin_deposits", over_d),
                            ("emergency", "denominations", d)]
    assert all_findings(dbs[1]) == stored(expected)
    assert rerun["balances"]["coin_irregular_loss"] == "KUDOS:0.2"
    assert run(dbs)["findings"] == []


def test_daemon_picks_up_new_data_and_stops_on_sigterm(dbs, hist, conf, tmp_path):
    d = hist.denomination()
    _, uuid, _ = hist.reserve("1")
    report_path = tmp_path / "r.json"
    proc = subprocess.Popen([sys.executable, "-m", "taler_ops.cli", "audit", "-c",
                             _conf(conf, dbs), "--poll-max", "0.5", "--report", str(report_path),
                             "--now", str(NOW)],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        wait_for(lambda: "reserves_reserve_in_serial_id" in progress(dbs[1]), timeout=60,
                 what="the daemon's first pass")
        over = hist.withdraw(uuid, d, "1.01")
        wait_for(lambda: all_findings(dbs[1]) == stored([
            ("reserve_balance_insufficient", "reserves_out", over)]), timeout=60,
            what="the daemon's finding on the new withdrawal")
        proc.send_signal(signal.SIGTERM)
        out, err = proc.communicate(timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 0, err
    assert "reserve_balance_insufficient 1" in out
    assert json.loads(report_path.read_text())["role"] == "primary"


# -- Ansible -----------------------------------------------------------------------------------------

def test_module_check_mode_then_run(dbs, hist, conf, module_runner):
    d = hist.denomination()
    _, uuid, _ = hist.reserve("1", current_balance="5")
    hist.withdraw(uuid, d, "1.01")
    path = _conf(conf, dbs)
    res, _ = module_runner("taler_audit", {"config": path, "internal": True}, check=True)
    assert res["changed"] is True and res["new_findings"] == 2, res
    assert progress(dbs[1]) == {}
    res, _ = module_runner("taler_audit", {"config": path, "internal": True})
    assert res["changed"] is True
    assert res["new_findings_by_kind"] == {"reserve_balance_insufficient": 1,
                                           "reserve_balance_summary_wrong": 1}
    res, _ = module_runner("taler_audit", {"config": path, "internal": True})
    assert res["changed"] is False and res["new_findings"] == 0
    assert res["open_findings_by_kind"]["reserve_balance_summary_wrong"] == 1


def test_internal_audit_playbook(dbs, hist, tmp_path, auditor_flavour):
    # The playbook audits with the wall clock: keep the reserve from expiring.
    _, uuid, _ = hist.reserve("1", current_balance="0.5", expiration=T0 + 100 * YEAR)
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    inventory = tmp_path / "hosts.yml"
    inventory.write_text(json.dumps({"all": {"children": {"exchange": {"hosts": {
        "exchange-test": {"ansible_connection": "local",
                          "ansible_python_interpreter": sys.executable}}}}}}))
    report = tmp_path / "report.json"
    extra = {"taler_audit_config": str(tmp_path / "internal.conf"),
             "taler_audit_exchangedb_config": dbs[0], "taler_audit_auditordb_config": dbs[1],
             "taler_audit_cli": os.path.join(os.path.dirname(sys.executable), "taler-ops"),
             "taler_audit_report": str(report), "taler_audit_fail_on_findings": True,
             "taler_audit_settle": 0.2}
    if auditor_flavour == "taler":
        extra["taler_audit_auditor_sql_dir"] = os.path.join(require_taler_sql(), "auditor")
    env = dict(os.environ, ANSIBLE_CONFIG=os.path.join(root, "ansible.cfg"), ANSIBLE_NOCOLOR="1")
    cmd = [os.path.join(os.path.dirname(sys.executable), "ansible-playbook"), "-i",
           str(inventory), os.path.join(root, "playbooks", "internal-audit.yml"),
           "-e", json.dumps(extra)]
    res = subprocess.run(cmd, capture_output=True, text=True, cwd=root, env=env)
    assert res.returncode != 0 and "stored 1 finding(s)" in res.stdout, res.stdout
    data = json.loads(report.read_text())
    assert found(data) == [("reserve_balance_summary_wrong", "reserves", uuid)]
    assert dbs[0] not in res.stdout or "password" not in dbs[0]
    assert oct((tmp_path / "internal.conf").stat().st_mode & 0o777) == "0o600"
    # Without new data and without the fail switch, the play passes.
    extra["taler_audit_fail_on_findings"] = False
    cmd[-1] = json.dumps(extra)
    res = subprocess.run(cmd, capture_output=True, text=True, cwd=root, env=env)
    assert res.returncode == 0, res.stdout + res.stderr
    assert "new findings: none" in res.stdout
