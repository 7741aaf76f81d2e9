"""No hardcoded PostgreSQL major: the programs and their version come from the host.

Discovery rules on fake trees (pure Python), the pg_server_bin module on this host, and
the pg_instance role with pg_instance_bin_dir left empty, against the real PostgreSQL here.
"""

import os
import shutil
import subprocess
import sys
import tempfile

import pytest

from ansible_runner import run_module, run_tasks

sys.path.insert(0, os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))),
                                "plugins", "module_utils"))
import taler_pg_bin  # noqa: E402

SERVER = ["initdb", "pg_ctl", "postgres", "psql"]


def fake_tree(root, majors, programs=SERVER, version_output=None):
    for major in majors:
        bindir = os.path.join(root, major, "bin")
        os.makedirs(bindir)
        for program in programs:
            path = os.path.join(bindir, program)
            with open(path, "w") as fh:
                fh.write(f"#!/bin/sh\necho '{program} (PostgreSQL) "
                         f"{version_output or major + '.3'}'\n")
            os.chmod(path, 0o755)
    return root


def test_highest_major_wins_numerically(tmp_path):
    root = fake_tree(str(tmp_path / "pg"), ["9.6", "15", "16", "10"])
    assert taler_pg_bin.debian_bin_dirs(root) == [
        f"{root}/16/bin", f"{root}/15/bin", f"{root}/10/bin", f"{root}/9.6/bin"]
    assert taler_pg_bin.find_bin_dir(SERVER, root=root, path="/nonexistent") == f"{root}/16/bin"
    assert taler_pg_bin.program_version(f"{root}/16/bin", "postgres") == (16, "16.3")


def test_a_major_without_the_programs_is_skipped(tmp_path):
    root = str(tmp_path / "pg")
    fake_tree(root, ["15"])
    fake_tree(root, ["17"], programs=["psql", "pg_dump"])      # client only
    assert taler_pg_bin.find_bin_dir(SERVER, root=root, path="/nonexistent") == f"{root}/15/bin"
    assert taler_pg_bin.find_bin_dir(["psql"], root=root, path="/nonexistent") == f"{root}/17/bin"


def test_an_existing_cluster_keeps_its_major(tmp_path):
    root = fake_tree(str(tmp_path / "pg"), ["15", "17"])
    data = tmp_path / "data"
    data.mkdir()
    assert taler_pg_bin.find_bin_dir(SERVER, root=root, path="/nonexistent",
                                     data_dir=str(data)) == f"{root}/17/bin"   # new cluster
    (data / "PG_VERSION").write_text("15\n")
    assert taler_pg_bin.find_bin_dir(SERVER, root=root, path="/nonexistent",
                                     data_dir=str(data)) == f"{root}/15/bin"
    (data / "PG_VERSION").write_text("14\n")
    with pytest.raises(taler_pg_bin.NotFound, match=r"PostgreSQL 14 program\(s\).*PG_VERSION 14"):
        taler_pg_bin.find_bin_dir(SERVER, root=root, path="/nonexistent", data_dir=str(data))


def test_explicit_directory_is_checked(tmp_path):
    root = fake_tree(str(tmp_path / "pg"), ["16"], programs=["psql"])
    assert taler_pg_bin.find_bin_dir(["psql"], bin_dir=f"{root}/16/bin") == f"{root}/16/bin"
    with pytest.raises(taler_pg_bin.NotFound, match=r"lacks PostgreSQL program\(s\) initdb"):
        taler_pg_bin.find_bin_dir(["psql", "initdb"], bin_dir=f"{root}/16/bin")


def test_path_fallback_and_nothing_found(tmp_path):
    other = fake_tree(str(tmp_path / "opt"), ["16"])
    found = taler_pg_bin.find_bin_dir(SERVER, root=str(tmp_path / "none"),
                                      path=f"{other}/16/bin")
    assert found == f"{other}/16/bin"
    with pytest.raises(taler_pg_bin.NotFound, match=r"no directory holds the PostgreSQL "
                                                      r"program\(s\) initdb"):
        taler_pg_bin.find_bin_dir(SERVER, root=str(tmp_path / "none"), path=str(tmp_path))


def _host_server_version():
    """(bin dir, '15.10') of the server programs here."""
    bindir = taler_pg_bin.find_bin_dir(SERVER)
    return bindir, taler_pg_bin.program_version(bindir, "postgres")[1]


def test_module_finds_this_hosts_server():
    bindir, version = _host_server_version()
    res = run_module("pg_server_bin", {"programs": SERVER + ["pg_basebackup"]}, check=True)
    assert res.ok and not res.result["changed"], res
    assert res.result["bin_dir"] == bindir
    assert res.result["version"] == version
    assert res.result["major"] == int(version.split(".")[0])
    bad = run_module("pg_server_bin", {"bin_dir": "/nonexistent", "programs": ["psql"]})
    assert not bad.ok and "/nonexistent lacks PostgreSQL program(s) psql" in bad.result["msg"]


def test_pg_instance_role_discovers_its_binaries():
    """The role with pg_instance_bin_dir empty: initdb, start (pg_ctl), psql, with the host's
    programs; the cluster runs the discovered version."""
    from pgcluster import free_port
    base = tempfile.mkdtemp(prefix="taler-ops-pgbin-")
    os.chmod(base, 0o755)
    name, user, port = "t18bin", "taler-t18bin", free_port()
    data = os.path.join(base, "data")
    tasks = [{"name": "An instance without pg_instance_bin_dir",
              "ansible.builtin.include_role": {"name": "pg_instance"},
              "vars": {"pg_instance_name": name, "pg_instance_port": port,
                       "pg_instance_data_dir": data,
                       "pg_instance_socket_dir": os.path.join(base, "run"),
                       "pg_instance_log_dir": os.path.join(base, "log"),
                       "pg_instance_tls": False, "pg_instance_service_mgr": "pg_ctl",
                       "pg_instance_databases": ["probe"]}}]
    bindir, version = _host_server_version()
    try:
        run = run_tasks(tasks, callback="default")
        assert run.ok, (run.stdout + run.stderr)[-4000:]
        with open(os.path.join(data, "PG_VERSION")) as fh:
            assert fh.read().strip() == version.split(".")[0]
        out = subprocess.run(["runuser", "-u", user, "--", os.path.join(bindir, "psql"), "-X",
                              "-A", "-t", "-h", os.path.join(base, "run"), "-p", str(port),
                              "-d", "probe", "-c", "SHOW server_version"],
                             capture_output=True, text=True, cwd="/")
        assert out.returncode == 0, out.stderr
        assert out.stdout.strip().startswith(version)
        again = run_tasks(tasks, callback="default")      # the existing cluster: same programs
        assert again.ok, (again.stdout + again.stderr)[-4000:]
    finally:
        subprocess.run(["runuser", "-u", user, "--", os.path.join(bindir, "pg_ctl"), "stop",
                        "-D", data, "-m", "immediate", "-w", "-s"], cwd="/",
                       capture_output=True)
        subprocess.run(["userdel", user], capture_output=True)
        subprocess.run(["groupdel", user], capture_output=True)
        shutil.rmtree(base, ignore_errors=True)
