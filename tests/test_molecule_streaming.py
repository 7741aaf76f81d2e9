"""molecule/streaming: the topology with a streaming-replication ingres (issue 11).

``molecule test -s streaming`` converges playbooks/site.yml with
taler_ingres_replication=streaming, checks idempotence and verifies (rows reach
the safe copy through the hot standby, TLS verify-full, read-only sync role,
status healthy in streaming mode).  Then, on the live deployment, a rerun of
site.yml asking for logical replication must fail with a clear message and
change nothing, and a rerun with ingres_standby_reclone=true clones the standby
again while the sync goes on; ``molecule cleanup`` removes everything at the end.  The
verbose output of every run is grepped for the generated passwords.
"""

import os
import re
import subprocess

import pytest

from conftest import wait_for
from molecule_helpers import ROOT, VENV_BIN, assert_no_password_leaked, molecule, scenario_env
from pgcluster import PG_BIN

STATE = "/var/lib/taler-ops-streaming"


def _snapshot():
    """Names, sizes and mtimes of everything in the state directory but live WAL/stats."""
    entries = {}
    for top, dirs, files in os.walk(STATE):
        dirs[:] = [d for d in dirs if d not in ("pg_wal", "pg_stat_tmp", "pg_xact", "pg_logical",
                                                "pg_subtrans", "base", "pg_multixact", "global",
                                                "pg_replslot")]
        for name in files:
            if name in ("postmaster.pid", "postmaster.opts"):
                continue
            st = os.stat(os.path.join(top, name))
            entries[os.path.join(top, name)] = (st.st_size, st.st_mtime_ns)
    return entries


def _psql(instance, port, user, db, query):
    return subprocess.run(
        [os.path.join(PG_BIN, "psql"), "-X", "-A", "-t", "-v", "ON_ERROR_STOP=1",
         "-h", f"/run/taler-ops-streaming/{instance}", "-p", str(port), "-U", user, "-d", db,
         "-c", query], check=True, capture_output=True, text=True).stdout.strip()


@pytest.mark.skipif(os.geteuid() != 0, reason="creates UNIX users and instances: needs root")
def test_molecule_streaming_scenario(tmp_path):
    secrets = tmp_path / "secrets"
    env = scenario_env(secrets)
    outputs = []
    try:
        rc, output = molecule("test", "streaming", env, timeout=1200)
        outputs.append(output)
        assert rc == 0, f"molecule test failed (exit {rc}):\n{output[-30000:]}"

        # A switch back to logical replication on the live deployment is refused
        # before any play changes anything (on the exchange too).
        ingres = os.path.join(STATE, "ingres")
        before = _snapshot()
        switch = subprocess.run(
            [os.path.join(VENV_BIN, "ansible-playbook"), "playbooks/site.yml", "-v",
             "-i", "inventories/local/hosts.yml", "-e", "@molecule/streaming/vars/main.yml",
             "-e", "taler_ingres_replication=logical"],
            cwd=ROOT, env=env, capture_output=True, text=True, timeout=600)
        out = switch.stdout + switch.stderr
        outputs.append(out)
        assert switch.returncode != 0, out[-5000:]
        flat = " ".join(out.split())
        assert (f"ingres at {ingres} is a streaming standby (standby.signal present); switching "
                "it to logical replication is refused and nothing was changed") in flat, out[-5000:]
        recap = re.findall(r"^(\S+)\s+: ok=\d+\s+changed=(\d+)", out, re.M)
        assert recap and all(changed == "0" for _, changed in recap), recap
        assert "Install the taler-ops engine" not in out
        assert _snapshot() == before
        assert os.path.exists(os.path.join(ingres, "standby.signal"))

        # Asked for explicitly, an existing standby is cloned again; the sync
        # reconnects and rows keep reaching the safe copy.
        reclone = subprocess.run(
            [os.path.join(VENV_BIN, "ansible-playbook"), "playbooks/site.yml", "-v",
             "-i", "inventories/local/hosts.yml", "-e", "@molecule/streaming/vars/main.yml",
             "-e", "ingres_standby_reclone=true"],
            cwd=ROOT, env=env, capture_output=True, text=True, timeout=600)
        out = reclone.stdout + reclone.stderr
        outputs.append(out)
        assert reclone.returncode == 0, out[-8000:]
        assert re.search(r"Clone the primary with pg_basebackup[^\n]*\n\s*changed: \[auditor-local\]",
                         out), out[-8000:]
        _psql("exchange", 5521, "tst-exchange-db", "taler_exchange",
              "INSERT INTO exchange.extensions (name) VALUES ('after-reclone')")
        wait_for(lambda: _psql("production", 5523, "tst-production", "taler_auditor",
                               "SELECT count(*) FROM exchange.extensions "
                               "WHERE name = 'after-reclone'") == "1",
                 timeout=120, interval=1, what="the row written after the reclone")
    finally:
        cleanup_rc, cleanup = molecule("cleanup", "streaming", env, timeout=600)
        outputs.append(cleanup)
    assert cleanup_rc == 0, cleanup[-10000:]
    for path in (STATE, "/run/taler-ops-streaming", "/etc/taler-ops-streaming",
                 "/var/log/taler-ops-streaming", "/opt/taler-ops-streaming"):
        assert not os.path.exists(path), f"{path} left behind by cleanup"
    assert subprocess.run(["id", "tst-ingres"], capture_output=True).returncode != 0

    assert_no_password_leaked(secrets, *outputs)
    assert any('"changed": false' in out for out in outputs)
