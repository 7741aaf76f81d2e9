"""inventories/production-example: a documented two-host inventory, never run here.

It must at least load (with its example vault), put one host in each of the exchange
and auditor groups, keep its secrets only in the encrypted vault, and let every
playbook pass ``--syntax-check`` against it.  Nothing here connects to a host.
"""

import json
import os
import subprocess

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
VENV_BIN = os.path.join(ROOT, ".venv", "bin")
INV = os.path.join(ROOT, "inventories", "production-example")
VAULT = os.path.join(INV, "group_vars", "all", "vault.yml")
VAULT_PASSWORD = os.path.join(INV, "vault-password.example")
PLAYBOOKS = ["site.yml", "destroy.yml", "gc.yml", "reset.yml", "status.yml", "internal-audit.yml"]
# Only what crosses hosts: the auditor host's local services use peer authentication.
SECRETS = ["replication"]
LOCAL_SERVICE_SECRETS = ["sync_ingres", "sync_production", "auditor"]


def _ansible(tool, *args):
    env = dict(os.environ, ANSIBLE_NOCOLOR="1", ANSIBLE_FORCE_COLOR="0")
    return subprocess.run([os.path.join(VENV_BIN, tool), *args], cwd=ROOT, env=env,
                          capture_output=True, text=True, timeout=300)


def _inventory(*extra):
    return _ansible("ansible-inventory", "-i", os.path.join(INV, "hosts.yml"), "--list", *extra)


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
                                            "sync_service_production_password")]
    auditor = inv["_meta"]["hostvars"]["auditor-db.example.org"]
    assert auditor["taler_auditor_address"] == "203.0.113.20"
    assert auditor["exchange_publisher_subscriber_addresses"] == ["{{ taler_auditor_address }}/32"]


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
