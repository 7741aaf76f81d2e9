"""molecule/tamper: deploy, tamper with ingres, the sync service halts, status says why,
the safe copy is unchanged (issue 9).  Needs root, like molecule/default."""

import os
import subprocess

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
VENV_BIN = os.path.join(ROOT, ".venv", "bin")


@pytest.mark.skipif(os.geteuid() != 0, reason="creates UNIX users and instances: needs root")
def test_molecule_tamper_scenario():
    env = dict(os.environ, PATH=VENV_BIN + os.pathsep + os.environ.get("PATH", ""),
               ANSIBLE_NOCOLOR="1", ANSIBLE_FORCE_COLOR="0", PY_COLORS="0", NO_COLOR="1")
    proc = subprocess.run([os.path.join(VENV_BIN, "molecule"), "test", "-s", "tamper"],
                          cwd=ROOT, env=env, capture_output=True, text=True, timeout=1200)
    output = proc.stdout + proc.stderr
    assert proc.returncode == 0, f"molecule test failed (exit {proc.returncode}):\n{output[-30000:]}"
    assert "Check the halt, the status and the safe copy" in output
