"""molecule/multihost: exchange and auditor on two hosts reached over SSH.

The hosts are network namespaces with their own sshd (molecule/multihost/create.yml);
``molecule test -s multihost`` converges playbooks/site.yml over SSH, checks
idempotence, verifies TLS verify-full replication across the link, the exchange's
pg_hba (only the auditor's address; another address is refused) and rows flowing
exchange -> ingres -> safe copy, then removes everything.  Afterwards this test greps
the verbose output for every generated password and checks that nothing of the
scenario is left: no tmh- users or namespaces, no processes, no directories.
Needs root (namespaces, users) and openssh-server (``make sshd``; ``make test`` has it).
"""

import glob
import os
import pwd
import grp
import subprocess
import time

import pytest

from molecule_helpers import assert_no_password_leaked, molecule, scenario_env

HOSTS = ("exchange", "auditor")
PATH_GLOBS = [f"{base}-multihost-*" for base in (
    "/var/lib/taler-ops", "/run/taler-ops", "/var/log/taler-ops", "/etc/taler-ops", "/opt/taler-ops")]


def _namespaces():
    out = subprocess.run(["ip", "netns", "list"], capture_output=True, text=True, check=True).stdout
    return sorted(line.split()[0] for line in out.splitlines() if line.strip())


def _scenario_processes():
    """Processes of the scenario: its sshds, ssh masters, servers and the sync (by command line)."""
    found = []
    for cmdline in glob.glob("/proc/[0-9]*/cmdline"):
        try:
            with open(cmdline, "rb") as f:
                args = f.read().replace(b"\0", b" ").decode(errors="replace")
        except OSError:
            continue
        if "tmh-sshd-" in args or "/tmp/tmh-ssh-" in args or "taler-ops-multihost-" in args:
            found.append(f"{cmdline.split('/')[2]}: {args.strip()}")
    return found


@pytest.mark.skipif(os.geteuid() != 0, reason="creates namespaces, UNIX users and instances: needs root")
def test_molecule_multihost_scenario(tmp_path):
    assert os.access("/usr/sbin/sshd", os.X_OK), "openssh-server is missing: run `make sshd` (make test does)"
    run_sshd_existed = os.path.exists("/run/sshd")
    secrets = tmp_path / "secrets"
    started = time.monotonic()
    rc, output = molecule("test", "multihost", scenario_env(secrets))
    took = time.monotonic() - started
    # Kept with pytest's temporary directories, for reading after a failure.
    (tmp_path / "molecule.log").write_text(output)
    print(f"molecule test -s multihost: exit {rc} after {took:.0f} s")
    assert rc == 0, f"molecule test failed (exit {rc}):\n{output[-30000:]}"
    assert_no_password_leaked(secrets, output)
    # The grep above means something only if the verbose run over SSH happened.
    assert "ok: [mh-auditor] => {" in output or '"changed": false' in output
    assert "Verify that another address is refused" in output

    # Nothing of the scenario is left behind.
    assert [ns for ns in _namespaces() if ns.startswith("tmh-")] == []
    assert subprocess.run(["ip", "link", "show", "tmh-ctl"], capture_output=True).returncode != 0
    assert [u.pw_name for u in pwd.getpwall() if u.pw_name.startswith("tmh-")] == []
    assert [g.gr_name for g in grp.getgrall() if g.gr_name.startswith("tmh-")] == []
    assert _scenario_processes() == []
    assert [p for pattern in PATH_GLOBS for p in glob.glob(pattern)] == []
    assert glob.glob("/tmp/tmh-ssh-*") == []
    # sshd's privilege-separation directory goes again if the scenario made it.
    assert os.path.exists("/run/sshd") == run_sshd_existed
