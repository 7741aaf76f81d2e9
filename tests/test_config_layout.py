"""The auditor host's configuration as the roles write it, in Taler's Debian layout.

The roles' own entry points for their configuration files (safe_copy and sync_service
``config``, ingres ``link_config``) run through Ansible into a temporary /etc/taler-auditor
(the whole roles would deploy the instances and services too; the molecule scenarios do
that); then the reader,
finding taler-auditor.conf where Taler's tools look for it, gets the values the roles meant,
each service reads its own secrets, and any other UNIX user reads none of them.
"""

import os
import pathlib
import pickle
import shutil
import stat
import subprocess
import sys
import tempfile

import pytest
import yaml

from ansible_runner import run_tasks
from taler_ops import config
from taler_ops.errors import ConfigError

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
# Stand-ins for the service users: accounts every Debian system has, each with its own group.
AUDITOR, SYNC, INGRES, OTHER = "daemon", "bin", "sys", "nobody"
MASTER_SEED = 0
CURRENCY, BASE_URL = "KUDOS", "https://exchange.demo.taler.net/"

pytestmark = pytest.mark.skipif(os.geteuid() != 0,
                                reason="writes files owned by other UNIX users and reads them "
                                       "as those users: needs root")


def _master_key(seed):
    out = subprocess.run([os.path.join(os.path.dirname(sys.executable), "taler-ops"), "generate",
                          "--show-master-key", "--master-seed", str(seed)],
                         capture_output=True, text=True, check=True)
    return out.stdout.strip()


@pytest.fixture(scope="module")
def tree():
    """/etc/taler-auditor as the three roles write it (under a temporary root that other
    users can traverse, unlike pytest's 0700 tmp_path)."""
    root = pathlib.Path(tempfile.mkdtemp(prefix="taler-ops-layout-"))
    os.chmod(root, 0o755)
    try:
        yield _write_tree(root)
    finally:
        shutil.rmtree(root)


def _write_tree(root):
    etc = root / "etc" / "taler-auditor"
    master = _master_key(MASTER_SEED)
    extra = {
        "safe_copy_config_dir": str(etc), "sync_service_config_dir": str(etc),
        "ingres_link_config_dir": str(etc),
        "safe_copy_auditor_user": AUDITOR, "sync_service_user": SYNC, "ingres_user": INGRES,
        "safe_copy_exchange_master_public_key": master,
        "safe_copy_exchange_currency": CURRENCY, "safe_copy_exchange_base_url": BASE_URL,
    }
    tasks = [{"ansible.builtin.include_role": {"name": "safe_copy", "tasks_from": "config"}},
             {"ansible.builtin.include_role": {"name": "sync_service", "tasks_from": "config"}},
             {"ansible.builtin.include_role": {"name": "ingres", "tasks_from": "link_config"}}]
    run = run_tasks(tasks, extra_vars=extra)
    assert run.ok, run
    again = run_tasks(tasks, extra_vars=extra)
    assert again.ok and not [r for r in again.results if r.get("changed")], again
    return root, etc, master


def _as_user(user, fn, *args):
    """fn(*args) in a child process running as ``user`` (uid, gid, no supplementary
    groups); returns its value or the exception it raised."""
    import pwd
    pw = pwd.getpwnam(user)
    r, w = os.pipe()
    pid = os.fork()
    if pid == 0:                                    # child
        try:
            os.close(r)
            os.setgroups([])
            os.setresgid(pw.pw_gid, pw.pw_gid, pw.pw_gid)
            os.setresuid(pw.pw_uid, pw.pw_uid, pw.pw_uid)
            try:
                result = fn(*args)
            except Exception as exc:                # handed back to the test
                result = exc
            with os.fdopen(w, "wb") as fh:
                pickle.dump(result, fh)
        finally:
            os._exit(0)
    os.close(w)
    with os.fdopen(r, "rb") as fh:
        data = fh.read()
    os.waitpid(pid, 0)
    return pickle.loads(data)


def _auditor_view(path):
    cfg = config.load(path, project="taler-auditor")
    return {"exchangedb": config.exchangedb_uri(cfg), "auditordb": config.auditordb_uri(cfg),
            "master": cfg.get_string("exchange", "MASTER_PUBLIC_KEY"),
            "currency": cfg.get_string("exchange", "CURRENCY"),
            "base_url": cfg.get_string("exchange", "BASE_URL")}


def _exchangedb(path):
    return config.exchangedb_uri(config.load(path, project="taler-auditor"))


def _read(path):
    with open(path) as fh:
        return fh.read()


def test_layout_files_modes_and_owners(tree):
    import grp
    import pwd
    _root, etc, _ = tree
    found = {}
    for dirpath, dirs, files in os.walk(etc):
        for name in dirs + files:
            path = os.path.join(dirpath, name)
            st = os.stat(path)
            found[os.path.relpath(path, etc)] = (pwd.getpwuid(st.st_uid).pw_name,
                                                 grp.getgrgid(st.st_gid).gr_name,
                                                 oct(stat.S_IMODE(st.st_mode)))
    public = ("root", "root", "0o644")
    assert found == {
        "conf.d": ("root", "root", "0o755"),
        "secrets": ("root", "root", "0o755"),
        "taler-auditor.conf": public,
        "conf.d/taler-ops.conf": public,
        "sync-source.conf": public,
        "sync-destination.conf": public,
        "ingres-link.conf": public,
        "secrets/exchange-db.secret.conf": ("root", AUDITOR, "0o640"),
        "secrets/auditor-db.secret.conf": ("root", AUDITOR, "0o640"),
        "secrets/sync-source-db.secret.conf": ("root", SYNC, "0o640"),
        "secrets/sync-destination-db.secret.conf": ("root", SYNC, "0o640"),
        "secrets/ingres-link-db.secret.conf": ("root", INGRES, "0o640"),
    }
    # Nothing outside secrets/ names a database.
    for name, _owner in found.items():
        if not name.startswith("secrets") and os.path.isfile(os.path.join(etc, name)):
            assert "CONFIG" not in _read(os.path.join(etc, name)), name


def test_found_where_taler_looks_and_read_as_the_roles_meant(tree, monkeypatch):
    root, etc, master = tree
    real = config.default_config_candidates

    def moved(project, environ=None):     # /etc/... of this host is root/etc/...
        return [c.replace("/etc/", str(root) + "/etc/", 1) for c in real(project, environ)]
    monkeypatch.setattr(config, "default_config_candidates", moved)
    monkeypatch.delenv("XDG_CONFIG_HOME", raising=False)
    monkeypatch.delenv("TALER_BASE_CONFIG", raising=False)
    monkeypatch.setenv("HOME", str(root / "home"))
    cfg = config.load(project="taler-auditor")       # no -c: Taler's default search
    assert cfg.path == str(etc / "taler-auditor.conf")
    want = ("postgresql://taler_auditor@/taler_auditor"
            "?host=/run/taler-ops/production&port=5443")
    assert config.exchangedb_uri(cfg) == want and config.auditordb_uri(cfg) == want
    assert cfg.origin("auditordb-postgres", "CONFIG").endswith("secrets/auditor-db.secret.conf:4")
    assert cfg.get_string("exchange", "MASTER_PUBLIC_KEY") == master
    assert cfg.get_string("exchange", "CURRENCY") == CURRENCY
    assert cfg.get_string("exchange", "BASE_URL") == BASE_URL
    # The auditor's own UNIX user reads the same values.
    assert _auditor_view(cfg.path) == {"exchangedb": want, "auditordb": want, "master": master,
                                       "currency": CURRENCY, "base_url": BASE_URL}
    assert _as_user(AUDITOR, _auditor_view, cfg.path) == _auditor_view(cfg.path)


def test_each_service_reads_its_own_files(tree):
    _root, etc, _ = tree
    src = _as_user(SYNC, _exchangedb, str(etc / "sync-source.conf"))
    dst = _as_user(SYNC, _exchangedb, str(etc / "sync-destination.conf"))
    assert src == "postgresql://taler_sync@/taler_exchange?host=/run/taler-ops/ingres&port=5442"
    assert dst == "postgresql://taler_sync@/taler_auditor?host=/run/taler-ops/production&port=5443"
    link = _as_user(INGRES, _exchangedb, str(etc / "ingres-link.conf"))
    assert link == ("postgresql:///taler_exchange?host=/run/taler-ops/ingres&port=5442"
                    f"&user={INGRES}")   # ingres_admin_role: the instance user


@pytest.mark.parametrize("user,conf", [
    (OTHER, "taler-auditor.conf"), (SYNC, "taler-auditor.conf"), (INGRES, "taler-auditor.conf"),
    (OTHER, "sync-source.conf"), (AUDITOR, "sync-destination.conf"), (OTHER, "ingres-link.conf"),
    (SYNC, "ingres-link.conf")])
def test_another_user_reads_no_secret(tree, user, conf):
    _root, etc, _ = tree
    # The main files load (Taler's rule: an unreadable secret is not an error) ...
    err = _as_user(user, _exchangedb, str(etc / conf))
    assert isinstance(err, ConfigError), err
    assert "cannot read" in str(err) and ".secret.conf" in str(err)
    # ... but no secret file opens for anybody but its service.
    owners = {"exchange-db": AUDITOR, "auditor-db": AUDITOR, "sync-source-db": SYNC,
              "sync-destination-db": SYNC, "ingres-link-db": INGRES}
    for name, owner in owners.items():
        got = _as_user(user, _read, str(etc / "secrets" / f"{name}.secret.conf"))
        if owner == user:
            assert "CONFIG = postgresql://" in got
        else:
            assert isinstance(got, PermissionError), (user, name)


def test_the_local_inventory_names_the_generators_master_key():
    """make demo and the molecule scenarios write this key into the auditor's
    configuration and generate with --master-seed taler_exchange_master_seed."""
    with open(os.path.join(ROOT, "inventories", "local", "group_vars", "all.yml")) as fh:
        inv = yaml.safe_load(fh)
    assert inv["taler_exchange_master_public_key"] == _master_key(inv["taler_exchange_master_seed"])
    # The wiring hands it to the role that writes [exchange] MASTER_PUBLIC_KEY.
    with open(os.path.join(ROOT, "playbooks", "group_vars", "all", "wiring.yml")) as fh:
        wiring = yaml.safe_load(fh)
    assert wiring["safe_copy_exchange_master_public_key"] == "{{ taler_exchange_master_public_key }}"
    with open(os.path.join(ROOT, "scripts", "demo.sh")) as fh:
        assert f"--master-seed {inv['taler_exchange_master_seed']}" in fh.read()
