"""inventories/production-example: a documented two-host inventory, never run here.

It must at least load (with its example vault), put one host in each of the exchange
and auditor groups, keep its secrets only in the encrypted vault, and let every
playbook pass ``--syntax-check`` against it.  Nothing here connects to a host.

The role variables follow from an inventory's settings through one file, the playbooks'
playbooks/group_vars/all/wiring.yml: no inventory repeats them, and none sets one of them
in its group_vars/all, where the wiring would override it without a word.
"""

import glob
import json
import os
import subprocess

import pytest
import yaml

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
VENV_BIN = os.path.join(ROOT, ".venv", "bin")
INV = os.path.join(ROOT, "inventories", "production-example")
VAULT = os.path.join(INV, "group_vars", "all", "vault.yml")
VAULT_PASSWORD = os.path.join(INV, "vault-password.example")
PLAYBOOKS = ["site.yml", "destroy.yml", "gc.yml", "reset.yml", "status.yml", "internal-audit.yml"]
# Only what crosses hosts: the auditor host's local services use peer authentication.
SECRETS = ["replication"]
LOCAL_SERVICE_SECRETS = ["sync_ingres", "sync_safe_copy", "auditor"]
WIRING = os.path.join(ROOT, "playbooks", "group_vars", "all", "wiring.yml")
# Every inventory in the repository (molecule/multihost's included).
INVENTORIES = ["inventories/local", "inventories/production-example", "molecule/multihost/inventory"]


def _ansible(tool, *args):
    env = dict(os.environ, ANSIBLE_NOCOLOR="1", ANSIBLE_FORCE_COLOR="0")
    return subprocess.run([os.path.join(VENV_BIN, tool), *args], cwd=ROOT, env=env,
                          capture_output=True, text=True, timeout=300)


def _inventory(*extra, playbook_dir=True):
    """``ansible-inventory --list``; with ``playbook_dir`` the variables as ansible-playbook
    sees them for a playbook in playbooks/ (the wiring included)."""
    pdir = ["--playbook-dir", os.path.join(ROOT, "playbooks")] if playbook_dir else []
    return _ansible("ansible-inventory", "-i", os.path.join(INV, "hosts.yml"), "--list", *pdir, *extra)


def _wired():
    with open(WIRING, encoding="utf-8") as f:
        return set(yaml.safe_load(f))


def test_inventory_lists_two_hosts_with_vault_secrets():
    proc = _inventory("--vault-password-file", VAULT_PASSWORD)
    assert proc.returncode == 0, proc.stderr
    inv = json.loads(proc.stdout)
    assert inv["exchange"]["hosts"] == ["exchange-db.example.org"]
    assert inv["auditor"]["hosts"] == ["auditor-db.example.org"]
    for host in ("exchange-db.example.org", "auditor-db.example.org"):
        hv = inv["_meta"]["hostvars"][host]
        assert hv["ansible_become_method"] == "ansible.builtin.sudo"
        for name in SECRETS:
            secret = hv[f"vault_taler_{name}_password"]
            assert len(secret) == 32 and secret.isalnum()
            # The plain variables only point into the vault.
            assert hv[f"taler_{name}_password"] == "{{ vault_taler_%s_password }}" % name
        # No password of a local service role exists, in the vault or beside it.
        assert not [k for k in hv if any(n in k for n in LOCAL_SERVICE_SECRETS) and "password" in k]
        assert not [k for k in hv if k in ("safe_copy_auditor_password", "sync_service_ingres_password",
                                            "sync_service_safe_copy_password")]
    auditor = inv["_meta"]["hostvars"]["auditor-db.example.org"]
    assert auditor["taler_auditor_address"] == "203.0.113.20"
    # From the wiring.
    assert auditor["exchange_publisher_subscriber_addresses"] == ["{{ taler_auditor_address }}/32"]
    # The exchange's own cluster (group_vars/taler.yml) wins over the wiring's stand-in.
    exchange = inv["_meta"]["hostvars"]["exchange-db.example.org"]
    assert exchange["exchange_publisher_login_host"] == "/var/run/postgresql"
    assert exchange["exchange_publisher_restart_command"][0] == "pg_ctlcluster"
    assert exchange["ingres_publisher_sslrootcert"] == "{{ taler_etc_dir }}/tls/exchange-ca.crt"


def test_the_inventory_sets_only_the_wired_variables_it_must_override():
    proc = _inventory("--vault-password-file", VAULT_PASSWORD, playbook_dir=False)
    assert proc.returncode == 0, proc.stderr
    hv = json.loads(proc.stdout)["_meta"]["hostvars"]["auditor-db.example.org"]
    overridden = {"exchange_publisher_login_host", "exchange_publisher_login_user",
                  "exchange_publisher_restart_command", "ingres_publisher_sslrootcert"}
    assert sorted(_wired() & set(hv)) == sorted(overridden)
    assert hv["taler_exchange_port"] == 5432


@pytest.mark.parametrize("inventory", INVENTORIES)
def test_no_inventory_sets_a_wired_variable_in_group_vars_all(inventory):
    """A role variable of the wiring set in an inventory's group_vars/all would lose to the
    wiring (playbook group_vars/all ranks above inventory group_vars/all)."""
    base = os.path.join(ROOT, inventory, "group_vars")
    files = [f for f in [os.path.join(base, "all.yml"), *glob.glob(os.path.join(base, "all", "*.yml"))]
             if os.path.isfile(f) and not f.endswith("vault.yml")]
    assert files
    for path in files:
        with open(path, encoding="utf-8") as f:
            assert not sorted(_wired() & set(yaml.safe_load(f))), path


def test_vault_is_encrypted_and_needs_its_password(tmp_path):
    with open(VAULT, encoding="utf-8") as f:
        text = f.read()
    assert text.startswith("$ANSIBLE_VAULT;1.1;AES256\n")
    assert "vault_taler" not in text
    proc = _inventory()
    assert proc.returncode != 0
    assert "no vault secrets" in proc.stderr
    wrong = tmp_path / "wrong-vault-password"
    wrong.write_text("not-the-password\n")
    proc = _inventory("--vault-password-file", str(wrong))
    assert proc.returncode != 0
    assert "Decryption failed" in proc.stderr


@pytest.mark.parametrize("playbook", PLAYBOOKS)
def test_playbooks_pass_syntax_check(playbook):
    proc = _ansible("ansible-playbook", "--syntax-check", "-i", os.path.join(INV, "hosts.yml"),
                    "--vault-password-file", VAULT_PASSWORD, os.path.join(ROOT, "playbooks", playbook))
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert f"playbook: {os.path.join(ROOT, 'playbooks', playbook)}" in proc.stdout
