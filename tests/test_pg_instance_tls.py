"""pg_instance: the server certificate carries pg_instance_tls_names and follows them.

A host that gets a new address (or name) needs a certificate for it, or every client
with sslmode=verify-full fails; the role issues the certificate again when the names
changed, and the running server serves the new one (a reload), and leaves both alone
otherwise.  Runs the whole role (its entry point main: the certificate's tasks are not
an entry point, and alone they would not show what the server serves) on localhost: a
real instance under pg_ctl, with the CA, data, socket and log directories and the
installed CA certificate in a temporary directory.
"""

import ipaddress
import os
import shutil
import socket
import ssl
import struct
import subprocess
import tempfile

import pytest
from cryptography import x509

from ansible_runner import run_tasks

NAME = "t19tls"
USER = f"taler-{NAME}"
# PostgreSQL's SSLRequest: length 8, code 1234.5679.
SSL_REQUEST = struct.pack("!ii", 8, 80877103)

pytestmark = pytest.mark.skipif(os.geteuid() != 0,
                                reason="creates the instance's UNIX user and runs it: needs root")


@pytest.fixture
def base():
    """A temporary root the instance user can traverse (unlike pytest's 0700 tmp_path);
    the instance stopped and its user removed afterwards."""
    from pgcluster import PG_BIN
    path = tempfile.mkdtemp(prefix="taler-ops-tls-")
    os.chmod(path, 0o755)
    try:
        yield path
    finally:
        subprocess.run(["runuser", "-u", USER, "--", os.path.join(PG_BIN, "pg_ctl"), "stop",
                        "-D", os.path.join(path, "data"), "-m", "immediate", "-w", "-s"],
                       cwd="/", capture_output=True)
        subprocess.run(["userdel", USER], capture_output=True)
        subprocess.run(["groupdel", USER], capture_output=True)
        shutil.rmtree(path, ignore_errors=True)


def _deploy(base, port, names):
    return run_tasks([{
        "name": "A pg_instance with TLS",
        "ansible.builtin.include_role": {"name": "pg_instance"},
        "vars": {
            "pg_instance_name": NAME,
            "pg_instance_port": port,
            "pg_instance_data_dir": os.path.join(base, "data"),
            "pg_instance_socket_dir": os.path.join(base, "run"),
            "pg_instance_log_dir": os.path.join(base, "log"),
            "pg_instance_listen_addresses": ["127.0.0.1"],
            "pg_instance_service_mgr": "pg_ctl",
            "pg_instance_tls_ca_dir": os.path.join(base, "ca"),
            "pg_instance_tls_ca_dest": os.path.join(base, "tls", "ca.crt"),
            "pg_instance_tls_names": names,
        },
    }])


def _names(cert):
    san = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    return (sorted(san.get_values_for_type(x509.DNSName)),
            sorted(str(a) for a in san.get_values_for_type(x509.IPAddress)))


def _installed(base):
    with open(os.path.join(base, "data", "server.crt"), "rb") as f:
        return x509.load_pem_x509_certificate(f.read())


def _served(port):
    """The certificate the running server presents (PostgreSQL's SSLRequest, then TLS)."""
    context = ssl.create_default_context()
    context.check_hostname = False
    context.verify_mode = ssl.CERT_NONE      # only read here; names are what is checked
    with socket.create_connection(("127.0.0.1", port), timeout=30) as sock:
        sock.sendall(SSL_REQUEST)
        assert sock.recv(1) == b"S"
        with context.wrap_socket(sock) as tls:
            return x509.load_der_x509_certificate(tls.getpeercert(binary_form=True))


def _changed(run):
    return [r for r in run.results if r.get("changed")]


def test_certificate_follows_the_names_and_the_server_serves_it(base):
    from pgcluster import free_port
    port = free_port()

    first = _deploy(base, port, ["10.200.0.10", "exchange.example"])
    assert first.ok, first
    issued = [r for r in first.results if "issued" in r.get("stdout", "")]
    assert len(issued) == 1
    assert _names(_installed(base)) == (["exchange.example"], ["10.200.0.10"])
    assert _served(port) == _installed(base)

    again = _deploy(base, port, ["exchange.EXAMPLE", "10.200.0.10"])  # same names, other order and case
    assert again.ok, again
    assert not _changed(again), _changed(again)
    assert _names(_installed(base)) == (["exchange.example"], ["10.200.0.10"])

    moved = _deploy(base, port, ["10.200.0.11", "::1"])
    assert moved.ok, moved
    assert any("issued" in r.get("stdout", "") for r in moved.results)
    assert _names(_installed(base)) == ([], sorted(["10.200.0.11", str(ipaddress.ip_address("::1"))]))
    # Reloaded: the running server presents the new certificate.
    assert _served(port) == _installed(base)

    # IPv6 written another way is the same address: nothing to do.
    same_v6 = _deploy(base, port, ["10.200.0.11", "0:0:0:0:0:0:0:1"])
    assert same_v6.ok, same_v6
    assert not _changed(same_v6), _changed(same_v6)
