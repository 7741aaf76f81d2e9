"""A halted sync stays halted: the supervisor and the systemd unit do not restart it."""

import os
import shlex
import subprocess

import jinja2
import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
TEMPLATES = os.path.join(ROOT, "roles", "sync_service", "templates")


def _render(name, **variables):
    env = jinja2.Environment(loader=jinja2.FileSystemLoader(TEMPLATES))
    env.filters["quote"] = lambda v: shlex.quote(str(v))
    return env.get_template(name).render(ansible_managed="test", **variables)


def _supervise(tmp_path, body):
    """Run the supervisor over a fake sync (``body``, sh); return (runs, log)."""
    runs = tmp_path / "runs"
    runs.write_text("")
    script = tmp_path / "supervise.sh"
    script.write_text(_render(
        "supervise.sh.j2", __sync_service_pidfile=str(tmp_path / "pid"),
        __sync_service_log=str(tmp_path / "log"),
        __sync_service_argv=["/bin/sh", "-c", f"echo run >> {shlex.quote(str(runs))}; {body}"]))
    # It ends by itself only when it stops restarting; the timeout fails a restart loop.
    subprocess.run(["/bin/sh", str(script)], timeout=30, check=True)
    return len(runs.read_text().splitlines()), (tmp_path / "log").read_text()


@pytest.mark.parametrize("status", [1, 2, 6])
def test_supervisor_does_not_restart_a_halt_or_a_configuration_error(tmp_path, status):
    runs, log = _supervise(tmp_path, f"exit {status}")
    assert runs == 1
    assert f"exited with status {status} (halt or configuration), not restarting" in log
    assert not (tmp_path / "pid").exists()


def test_supervisor_restarts_after_other_failures_until_a_halt(tmp_path):
    # First run: a lost database (exit 5) is restarted; the second run halts (exit 1).
    runs, log = _supervise(tmp_path, f'[ "$(wc -l < {shlex.quote(str(tmp_path / "runs"))})" -ge 2 ] '
                                     "&& exit 1; exit 5")
    assert runs == 2
    assert "status 5, restarting" in log and "status 1 (halt or configuration)" in log


def test_systemd_unit_prevents_restarting_a_halt():
    unit = _render("sync.service.j2", sync_service_user="taler-sync",
                   __sync_service_argv=["/venv/bin/taler-ops", "sync"])
    lines = unit.splitlines()
    assert "Restart=on-failure" in lines
    prevent = [line for line in lines if line.startswith("RestartPreventExitStatus=")]
    assert prevent and set(prevent[0].split("=", 1)[1].split()) >= {"1", "2", "6"}
