"""molecule/upgrade: the previous release deployed, upgraded under live traffic.

Runs ``molecule test -s upgrade``: cleanup, converge (the previous release's own
checkout, exported from git, deploys with its site.yml; live traffic starts),
side_effect (this checkout's playbooks/upgrade.yml), verify (no row lost or
duplicated, exchange-0002's table and column arrive, audit progress kept,
backup present, old tools refuse the new schema, a second upgrade changes
nothing), cleanup.  Then greps the verbose output for every password.
"""

import os
import subprocess

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
VENV_BIN = os.path.join(ROOT, ".venv", "bin")
PREVIOUS_RELEASE = "9c54c1a81bbeaeb78f63f1507c2aca173cc10444"


def _has_previous_release():
    return subprocess.run(["git", "-C", ROOT, "cat-file", "-e", PREVIOUS_RELEASE + "^{commit}"],
                          capture_output=True).returncode == 0


@pytest.mark.skipif(os.geteuid() != 0, reason="creates UNIX users and instances: needs root")
@pytest.mark.skipif(not _has_previous_release(),
                    reason=f"the previous release {PREVIOUS_RELEASE[:12]} is not in this clone's "
                           "history (shallow clone?): nothing to upgrade from")
def test_molecule_upgrade_scenario(tmp_path):
    secrets = tmp_path / "secrets"
    env = dict(os.environ,
               PATH=VENV_BIN + os.pathsep + os.environ.get("PATH", ""),
               TALER_OPS_MOLECULE_SECRETS=str(secrets),
               ANSIBLE_NOCOLOR="1", ANSIBLE_FORCE_COLOR="0", PY_COLORS="0", NO_COLOR="1")
    proc = subprocess.run([os.path.join(VENV_BIN, "molecule"), "test", "-s", "upgrade"],
                          cwd=ROOT, env=env, capture_output=True, text=True, timeout=1800)
    output = proc.stdout + proc.stderr
    assert proc.returncode == 0, f"molecule test failed (exit {proc.returncode}):\n{output[-30000:]}"
    assert "Upgrading to exchange-0002" in output, "the upgrade did not run"

    passwords = {p.name: p.read_text().split()[0] for p in (secrets / "passwords").iterdir()}
    assert len(passwords) == 4 and all(len(pw) == 32 for pw in passwords.values())
    leaked = sorted(name for name, pw in passwords.items() if pw in output)
    assert not leaked, f"password(s) of {leaked} appear in the molecule -v output"
