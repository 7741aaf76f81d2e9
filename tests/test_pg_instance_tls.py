"""pg_instance: the server certificate carries pg_instance_tls_names and follows them.

A host that gets a new address (or name) needs a certificate for it, or every client
with sslmode=verify-full fails; the role issues the certificate again when the names
changed and leaves it alone otherwise.  Runs the role's tls tasks on localhost with the
CA, the data directory and the installed CA certificate in a temporary directory.
"""

import ipaddress
import os

import pytest
from cryptography import x509

from ansible_runner import run_tasks


def _tls(tmp_path, names):
    return run_tasks([{
        "name": "TLS of a pg_instance",
        "ansible.builtin.include_role": {"name": "pg_instance", "tasks_from": "tls"},
        "vars": {
            "pg_instance_name": "tlstest",
            "pg_instance_user": "root",
            "pg_instance_group": "root",
            "pg_instance_data_dir": str(tmp_path / "data"),
            "pg_instance_tls_ca_dir": str(tmp_path / "ca"),
            "pg_instance_tls_ca_dest": str(tmp_path / "ca.crt"),
            "pg_instance_tls_names": names,
        },
    }])


def _names(path):
    with open(path, "rb") as f:
        cert = x509.load_pem_x509_certificate(f.read())
    san = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    return (sorted(san.get_values_for_type(x509.DNSName)),
            sorted(str(a) for a in san.get_values_for_type(x509.IPAddress)))


@pytest.mark.skipif(os.geteuid() != 0, reason="installs files owned by the instance user (root here): needs root")
def test_certificate_follows_the_names(tmp_path):
    (tmp_path / "data").mkdir()
    server_crt = tmp_path / "data" / "server.crt"

    first = _tls(tmp_path, ["10.200.0.10", "exchange.example"])
    assert first.ok, first
    issued = [r for r in first.results if "issued" in r.get("stdout", "")]
    assert len(issued) == 1
    assert _names(server_crt) == (["exchange.example"], ["10.200.0.10"])

    again = _tls(tmp_path, ["exchange.EXAMPLE", "10.200.0.10"])  # same names, other order and case
    assert again.ok, again
    assert not any(r.get("changed") for r in again.results), again.results
    assert _names(server_crt) == (["exchange.example"], ["10.200.0.10"])

    moved = _tls(tmp_path, ["10.200.0.11", "::1"])
    assert moved.ok, moved
    assert any("issued" in r.get("stdout", "") for r in moved.results)
    assert _names(server_crt) == ([], sorted(["10.200.0.11", str(ipaddress.ip_address("::1"))]))

    # IPv6 written another way is the same address: nothing to do.
    same_v6 = _tls(tmp_path, ["10.200.0.11", "0:0:0:0:0:0:0:1"])
    assert same_v6.ok, same_v6
    assert not any(r.get("changed") for r in same_v6.results), same_v6.results
