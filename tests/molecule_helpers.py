"""Running a molecule scenario from pytest, and the checks every scenario test shares."""

import os
import subprocess

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
VENV_BIN = os.path.join(ROOT, ".venv", "bin")
# What every scenario shares, merged under its molecule.yml.  Molecule finds it by itself at
# the root of a git checkout; named here so that a tree without .git tests the same.
BASE_CONFIG = os.path.join(ROOT, ".config", "molecule", "config.yml")
# Only what crosses hosts: the auditor host's local services use peer authentication.
PASSWORD_NAMES = ["replication"]


def scenario_env(secrets=None):
    """The environment for molecule and ansible-playbook; ``secrets``: where the
    scenario keeps its generated passwords, so the test can read them."""
    env = dict(os.environ, PATH=VENV_BIN + os.pathsep + os.environ.get("PATH", ""),
               ANSIBLE_NOCOLOR="1", ANSIBLE_FORCE_COLOR="0", PY_COLORS="0", NO_COLOR="1")
    if secrets is not None:
        env["TALER_OPS_MOLECULE_SECRETS"] = str(secrets)
    return env


def molecule(action, scenario, env, timeout=1800):
    """Run ``molecule ACTION -s SCENARIO``; returns (returncode, stdout + stderr)."""
    proc = subprocess.run([os.path.join(VENV_BIN, "molecule"), "-c", BASE_CONFIG, action, "-s", scenario],
                          cwd=ROOT, env=env, capture_output=True, text=True, timeout=timeout)
    return proc.returncode, proc.stdout + proc.stderr


def run_scenario(scenario, env, timeout=1800):
    """``molecule test -s SCENARIO``, failing the test with the output's tail."""
    rc, output = molecule("test", scenario, env, timeout)
    assert rc == 0, f"molecule test -s {scenario} failed (exit {rc}):\n{output[-30000:]}"
    return output


def assert_no_password_leaked(secrets, *outputs, names=PASSWORD_NAMES):
    """Every generated password exists, and none appears in the (-v) outputs.

    ``names``: the passwords the deployment generates; None for a deployment made by an
    earlier release (which also generated passwords for local roles): at least these."""
    files = sorted((secrets / "passwords").iterdir())
    if names is None:
        assert set(PASSWORD_NAMES) <= {p.name for p in files}, [p.name for p in files]
    else:
        assert [p.name for p in files] == names
    passwords = {p.name: p.read_text().split()[0] for p in files}
    assert all(len(pw) == 32 for pw in passwords.values())
    leaked = sorted(name for name, pw in passwords.items() if any(pw in out for out in outputs))
    assert not leaked, f"password(s) of {leaked} appear in the -v output"
