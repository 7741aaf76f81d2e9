"""molecule/default: the whole topology converged on this machine.

Runs ``molecule test -s default`` (cleanup, syntax, converge = playbooks/site.yml,
idempotence, verify, cleanup) and then greps its verbose (-v) output for every
password the deployment generated.  Needs root: it creates UNIX users and
PostgreSQL instances (on their own ports and paths, apart from ``make demo``).
"""

import os
import subprocess

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
VENV_BIN = os.path.join(ROOT, ".venv", "bin")


@pytest.mark.skipif(os.geteuid() != 0, reason="creates UNIX users and instances: needs root")
def test_molecule_default_scenario(tmp_path):
    secrets = tmp_path / "secrets"
    env = dict(os.environ,
               PATH=VENV_BIN + os.pathsep + os.environ.get("PATH", ""),
               # The scenario keeps its generated passwords here, so we can read them.
               TALER_OPS_MOLECULE_SECRETS=str(secrets),
               ANSIBLE_NOCOLOR="1", ANSIBLE_FORCE_COLOR="0", PY_COLORS="0", NO_COLOR="1")
    proc = subprocess.run([os.path.join(VENV_BIN, "molecule"), "test", "-s", "default"],
                          cwd=ROOT, env=env, capture_output=True, text=True, timeout=1200)
    output = proc.stdout + proc.stderr
    assert proc.returncode == 0, f"molecule test failed (exit {proc.returncode}):\n{output[-30000:]}"

    password_files = sorted((secrets / "passwords").iterdir())
    assert [p.name for p in password_files] == [
        "auditor", "replication", "sync-ingres", "sync-production"]
    passwords = {p.name: p.read_text().split()[0] for p in password_files}
    assert all(len(pw) == 32 for pw in passwords.values())
    leaked = sorted(name for name, pw in passwords.items() if pw in output)
    assert not leaked, f"password(s) of {leaked} appear in the molecule -v output"
    # The grep above means something only if the verbose run happened.
    assert "ok: [auditor-local] => {" in output or '"changed": false' in output
