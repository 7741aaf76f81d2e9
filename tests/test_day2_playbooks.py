"""Day-2 playbooks (issue 8) on a real local deployment: gc.yml, reset.yml, status.yml.

Deploys site.yml with tests/day2_vars.yml (own ports, paths and users), plants a
history whose garbage collection tells the safe-copy rule apart from the
primary's, and checks that gc.yml deletes exactly what the rule says, that the
sync never brings collected rows back, that reset.yml refuses without its
confirmation, and that status.yml reports the deployment healthy.
"""

import os
import subprocess
import sys
import time

import psycopg
import pytest

import builders as b
from conftest import ROOT, wait_for

VENV_BIN = os.path.dirname(sys.executable)
VARS = os.path.join(ROOT, "tests", "day2_vars.yml")
PORT_BASE = 5470
RUN = "/run/taler-ops-day2"
NOW_PAST = 0


def _play(name, *extra, env):
    cmd = [os.path.join(VENV_BIN, "ansible-playbook"), "-i",
           os.path.join(ROOT, "inventories", "local", "hosts.yml"), "-e", f"@{VARS}",
           os.path.join(ROOT, "playbooks", name), *extra]
    return subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, timeout=900)


def _uri(instance, port_offset, dbname, user):
    return (f"postgresql:///{dbname}?host={RUN}/{instance}&port={PORT_BASE + port_offset}"
            f"&user={user}")


EXCHANGE = _uri("exchange", 1, "taler_exchange", "tday-exchange-db")
INGRES = _uri("ingres", 2, "taler_exchange", "tday-ingres")
SAFE = _uri("production", 3, "taler_auditor", "tday-production")


def _reserves(uri):
    with psycopg.connect(uri) as conn:
        return {bytes(r[0]) for r in conn.execute("SELECT reserve_pub FROM exchange.reserves")}


@pytest.fixture(scope="module")
def deployment(tmp_path_factory):
    secrets = tmp_path_factory.mktemp("day2-secrets")
    env = dict(os.environ, TALER_OPS_DAY2_SECRETS=str(secrets), ANSIBLE_NOCOLOR="1",
               ANSIBLE_CONFIG=os.path.join(ROOT, "ansible.cfg"),
               PATH=VENV_BIN + os.pathsep + os.environ.get("PATH", ""))
    site = _play("site.yml", env=env)
    try:
        assert site.returncode == 0, site.stdout[-20000:] + site.stderr[-5000:]
        yield env
    finally:
        _play("destroy.yml", env=env)


@pytest.mark.skipif(os.geteuid() != 0, reason="creates UNIX users and instances: needs root")
def test_gc_reset_and_status_playbooks(deployment):
    env = deployment
    now = int(time.time() * 1_000_000)
    past, future = now - b.YEAR_US, now + b.YEAR_US
    with psycopg.connect(EXCHANGE, autocommit=True) as conn:
        # Same four reserves as tests/test_dbinit.py: A collectable everywhere, D only
        # on a primary (its history still holds 7 there is no withdrawal for).
        d = b.denomination(conn, "day2", expire_legal=future)
        a_pub, a_uuid = b.reserve(conn, "A2", past)
        b.reserve_in(conn, a_pub, (10, 0), "day2")
        b.reserve_out(conn, a_uuid, d, (10, 0), "A2")
        b_pub, _ = b.reserve(conn, "B2", past, current_balance=(10, 0))
        b.reserve_in(conn, b_pub, (10, 0), "day2")
        c_pub, _ = b.reserve(conn, "C2", future, current_balance=(3, 0))
        b.reserve_in(conn, c_pub, (3, 0), "day2")
        d_pub, _ = b.reserve(conn, "D2", past)
        b.reserve_in(conn, d_pub, (7, 0), "day2")
    planted = {a_pub, b_pub, c_pub, d_pub}
    wait_for(lambda: planted <= _reserves(SAFE), timeout=120)

    check = _play("gc.yml", "--check", env=env)
    assert check.returncode == 0, check.stdout[-10000:]
    assert "would delete" in check.stdout and "'reserves': 1" in check.stdout
    assert planted <= _reserves(SAFE), "check mode deleted something"

    gc_run = _play("gc.yml", env=env)
    assert gc_run.returncode == 0, gc_run.stdout[-10000:]
    assert "'reserves': 1" in gc_run.stdout and "rules for a safe-copy" in gc_run.stdout
    assert _reserves(SAFE) & planted == {b_pub, c_pub, d_pub}
    with psycopg.connect(SAFE) as conn:
        mark = conn.execute("SELECT last_serial FROM taler_ops.sync_watermarks "
                            "WHERE table_name = 'reserves'").fetchone()[0]

    # The sync runs again; new rows arrive, the collected reserve never comes back.
    with psycopg.connect(EXCHANGE, autocommit=True) as conn:
        e_pub, _ = b.reserve(conn, "E2", future)
    wait_for(lambda: e_pub in _reserves(SAFE), timeout=120)
    assert a_pub not in _reserves(SAFE) and a_pub in _reserves(INGRES)
    with psycopg.connect(SAFE) as conn:
        assert conn.execute("SELECT last_serial FROM taler_ops.sync_watermarks "
                            "WHERE table_name = 'reserves'").fetchone()[0] == mark + 1

    refused = _play("reset.yml", "-e", "taler_reset_auditor=restart", env=env)
    assert refused.returncode != 0
    assert "taler_reset_confirm_auditor_restart=yes" in refused.stdout
    with psycopg.connect(SAFE, autocommit=True) as conn:
        conn.execute("INSERT INTO auditor.auditor_progress VALUES ('day2', 5)")
    reset = _play("reset.yml", "-e", "taler_reset_auditor=restart",
                  "-e", "taler_reset_confirm_auditor_restart=yes", env=env)
    assert reset.returncode == 0, reset.stdout[-10000:]
    with psycopg.connect(SAFE) as conn:
        assert conn.execute("SELECT count(*) FROM auditor.auditor_progress").fetchone()[0] == 0
        assert b.count(conn, "reserves") >= 4, "an auditor restart must not touch the copy"

    status = _play("status.yml", env=env)
    assert status.returncode == 0, status.stdout[-10000:]
    assert "healthy" in status.stdout
