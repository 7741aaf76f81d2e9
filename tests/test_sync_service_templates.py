"""A halted sync stays halted: the supervisor and the systemd unit do not restart it."""

import os
import shlex
import shutil
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


# --- every systemd unit the roles write: sandboxed, and `systemd-analyze verify` clean ----

SANDBOX = {"NoNewPrivileges": "true", "ProtectSystem": "strict", "ProtectHome": "true",
           "PrivateTmp": "true", "PrivateDevices": "true", "RestrictSUIDSGID": "true",
           "CapabilityBoundingSet": "", "SystemCallArchitectures": "native"}


def _render_units(tmp_path):
    """The roles' unit templates rendered by Ansible itself (filters, role defaults and vars),
    with paths that exist here, so systemd-analyze can check the executables too."""
    from ansible_runner import run_tasks
    from pgcluster import PG_BIN
    venv = os.path.join(ROOT, ".venv")
    units = {
        "sync_service": ("sync.service.j2", "taler-ops-sync.service",
                         dict(sync_service_venv=venv, sync_service_user="taler-sync",
                              sync_service_run_dir="/run/taler-ops/sync")),
        "exchange_generator": ("generator.service.j2", "taler-exchange-generator.service",
                               dict(exchange_generator_venv=venv)),
        "ingres": ("link.service.j2", "taler-ops-ingres-link.service",
                   dict(ingres_link_venv=venv)),
        "pg_instance": ("instance.service.j2", "taler-ops-pg-production.service",
                        dict(pg_instance_name="production",
                             __pg_instance_server={"bin_dir": PG_BIN})),
    }
    tasks, extra = [], {}
    for role, (template, unit, variables) in units.items():
        extra.update(variables)  # above include_vars, unlike task vars
        for kind in ("defaults", "vars"):
            tasks.append({"ansible.builtin.include_vars": os.path.join(ROOT, "roles", role, kind,
                                                                       "main.yml")})
        tasks.append({"ansible.builtin.template": {
            "src": os.path.join(ROOT, "roles", role, "templates", template),
            "dest": str(tmp_path / unit)}})
    run = run_tasks(tasks, extra_vars=extra)
    assert run.ok, run
    return {role: tmp_path / unit for role, (_, unit, _) in units.items()}


def _settings(path):
    """[Service] settings: {key: [values]}."""
    settings, section = {}, None
    for line in path.read_text().splitlines():
        line = line.strip()
        if line.startswith("["):
            section = line
        elif section == "[Service]" and "=" in line and not line.startswith("#"):
            key, value = line.split("=", 1)
            settings.setdefault(key, []).append(value)
    return settings


def test_every_unit_is_sandboxed_and_passes_systemd_analyze_verify(tmp_path):
    units = _render_units(tmp_path)
    for role, path in units.items():
        settings = _settings(path)
        for key, value in SANDBOX.items():
            assert settings.get(key) == [value], f"{role}: {key}={settings.get(key)}"
        assert settings.get("User") and settings["User"][0] not in ("root", "0"), role
    # Each unit may write exactly what it writes.
    assert _settings(units["sync_service"])["ReadWritePaths"] == ["/run/taler-ops/sync"]
    assert _settings(units["pg_instance"])["ReadWritePaths"] == [
        "/var/lib/taler-ops/production /run/taler-ops/production"]
    assert _settings(units["ingres"])["ReadWritePaths"] == ["/var/lib/taler-ops/ingres-link"]
    assert "ReadWritePaths" not in _settings(units["exchange_generator"])

    # systemd-analyze verify works offline (systemd need not run); it reports unknown keys,
    # bad values and missing executables on stderr, some with exit status 0: any line about
    # one of our units is a failure.
    analyze = shutil.which("systemd-analyze")
    if analyze is None:
        pytest.skip("systemd-analyze is not installed")
    proc = subprocess.run([analyze, "verify", "--man=no", "--recursive-errors=no",
                           *map(str, units.values())], capture_output=True, text=True,
                          cwd=tmp_path, timeout=120)
    ours = [line for line in (proc.stdout + proc.stderr).splitlines()
            if any(p.name in line for p in units.values())]
    assert proc.returncode == 0 and not ours, proc.stdout + proc.stderr


def test_systemd_analyze_verify_catches_what_the_test_relies_on(tmp_path):
    """The check above means something: a misspelt key in a unit is reported."""
    analyze = shutil.which("systemd-analyze")
    if analyze is None:
        pytest.skip("systemd-analyze is not installed")
    unit = tmp_path / "taler-ops-broken.service"
    unit.write_text("[Service]\nExecStart=/bin/true\nProtectSystm=strict\n")
    proc = subprocess.run([analyze, "verify", "--man=no", "--recursive-errors=no", str(unit)],
                          capture_output=True, text=True, timeout=120)
    assert "Unknown key" in proc.stderr and unit.name in proc.stderr


# --- the sync's grants on the safe copy, by the role's own tasks -----------------------------

def test_the_roles_grants_let_the_sync_analyze_through_the_owners_function(cluster):
    """The entry point privileges of roles/sync_service against real databases laid out as roles/safe_copy
    makes them (a non-login owner ran dbinit): the sync's role gets EXECUTE on
    taler_ops.analyze_exchange_table, converged idempotently, and a sync as that role has
    the tables it filled analyzed."""
    import psycopg
    from ansible_runner import run_tasks
    from sync_helpers import execute, make_template, new_name
    from taler_ops import sync
    from taler_ops.schema import analyze
    from taler_ops.sync import statistics
    import sync_data

    tag = str(os.getpid())
    owner, role = f"tpl_owner_{tag}", f"tpl_sync_{tag}"
    execute(cluster.uri(), f'CREATE ROLE "{owner}" NOLOGIN', f'CREATE ROLE "{role}" LOGIN')
    src_db, dst_db = new_name("tpl_ingres"), new_name("tpl_safe")
    src = make_template(cluster, src_db, "ingres", rows=20)
    dst = cluster.createdb(dst_db)
    execute(dst, f'GRANT CONNECT, CREATE ON DATABASE "{dst_db}" TO "{owner}"')
    from taler_ops.schema import dbinit
    dbinit.exchange_dbinit(dst + f"&options=-c%20role%3D{owner}", role="safe-copy")

    side = {"socket_dir": cluster.sockets, "port": cluster.port, "admin": cluster.superuser}
    extra = {"sync_service_venv": os.path.join(ROOT, ".venv"), "sync_service_role": role,
             "sync_service_replica_role": False, "sync_service_ingres_db": src_db,
             "sync_service_safe_copy_db": dst_db}
    for name in ("ingres", "safe_copy"):
        extra.update({f"sync_service_{name}_{k}": v for k, v in side.items()})
    tasks = [{"ansible.builtin.include_role": {"name": "sync_service",
                                               "tasks_from": "privileges"}}]
    run = run_tasks(tasks, extra_vars=extra)
    assert run.ok, run
    again = run_tasks(tasks, extra_vars=extra)
    assert again.ok and not [r for r in again.results if r.get("changed")], again

    with psycopg.connect(dst) as conn:
        assert conn.execute(
            "SELECT has_function_privilege(%s, %s, 'EXECUTE'), "
            "has_function_privilege('public', %s, 'EXECUTE')",
            (role, analyze.SIGNATURE, analyze.SIGNATURE)).fetchone() == (True, False)
    rows = statistics.MIN_ROWS + 100
    sync_data.populate(src, rows, start=21, tables=["reserves"])
    result = sync.sync_once(cluster.uri(src_db, user=role), cluster.uri(dst_db, user=role))
    assert result["tables"]["reserves"]["copied"] == rows + 20
    assert result["analyzed"] == ["reserves"] and not result["warnings"], result
