#!/usr/bin/env python3
"""The business-halt window of playbooks/upgrade.yml (issue 7).  Prints figures.

Uses the molecule/upgrade scenario's deployment (its ports, users and paths):

  1. ``molecule converge -s upgrade``: the previous release deployed from git
     history, live traffic running;
  2. the traffic halted, N rows of history written with the previous release's
     ``taler-ops gen`` (its name for ``generate``) on the exchange, replicated,
     synced, and audited once (the steady state of an auditor that audits continuously);
  3. the previous release's stand-in (service exchange-traffic, its engine's
     ``taler-ops gen``) replaced by this checkout's generator, installed stopped
     (molecule/upgrade/replace_stand_in.yml: no engine knows the other's
     sub-command), then playbooks/upgrade.yml runs (as molecule's side effect
     would, without its deliberately failing first attempt) and starts the
     generator in step 8; the playbook itself reports how long the business
     logic was halted (from its step 1 to its step 8);
  4. ``molecule cleanup -s upgrade`` removes everything.

    sudo .venv/bin/python bench/bench_upgrade.py --rows 1000000

Goal (issue 7): halt -> resume <= 60 s with 1M rows in the exchange database.
"""

import argparse
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time

import psycopg

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
VENV_BIN = os.path.join(ROOT, ".venv", "bin")
PREFIX, PORT_BASE = "tupg-", 5460
ETC, RUN = "/etc/taler-ops-upgrade", "/run/taler-ops-upgrade"
TALER_OPS = "/opt/taler-ops-upgrade/venv/bin/taler-ops"
EXCHANGE = (f"postgresql:///taler_exchange?host={RUN}/exchange&port={PORT_BASE + 1}"
            f"&user={PREFIX}exchange-db")
SAFE = (f"postgresql:///taler_auditor?host={RUN}/production&port={PORT_BASE + 3}"
        f"&user={PREFIX}production")


def molecule(action, env):
    started = time.monotonic()
    proc = subprocess.run([os.path.join(VENV_BIN, "molecule"), action, "-s", "upgrade"],
                          cwd=ROOT, env=env, capture_output=True, text=True)
    output = proc.stdout + proc.stderr
    if proc.returncode != 0:
        sys.exit(f"molecule {action} failed:\n{output[-5000:]}")
    return output, time.monotonic() - started


def previous_stand_in(action):
    """The previous release's stand-in business logic (roles/exchange_traffic)."""
    subprocess.run([f"/etc/init.d/{PREFIX}exchange-traffic", action], check=True,
                   capture_output=True)


def run_as(user, *argv):
    subprocess.run(["runuser", "-u", user, "--", *argv], check=True, capture_output=True)


def replicated_total(uri):
    from taler_ops.schema import registry  # the engine of this checkout, names only
    with psycopg.connect(uri) as conn:
        return sum(conn.execute(f"SELECT count(*) FROM exchange.{e.name}").fetchone()[0]
                   for e in registry.REPLICATED
                   if conn.execute("SELECT to_regclass(%s)", (f"exchange.{e.name}",)).fetchone()[0])


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--rows", type=int, default=1_000_000)
    parser.add_argument("--keep", action="store_true", help="leave the deployment in place")
    args = parser.parse_args()
    secrets = tempfile.mkdtemp(prefix="bench-upgrade-secrets-")
    # One secrets directory for every run below (passwords must not change).
    env = dict(os.environ, PATH=VENV_BIN + os.pathsep + os.environ.get("PATH", ""),
               ANSIBLE_NOCOLOR="1", PY_COLORS="0", TALER_OPS_MOLECULE_SECRETS=secrets)

    molecule("cleanup", env)
    _, took = molecule("converge", env)
    print(f"previous release deployed with live traffic in {took:.0f} s")

    previous_stand_in("stop")
    started = time.monotonic()
    run_as(f"{PREFIX}exchange-db", TALER_OPS, "gen", "-c", f"{ETC}/traffic/exchange.conf",
           "--rows", str(args.rows))
    print(f"{args.rows} rows generated in {time.monotonic() - started:.0f} s")
    want = replicated_total(EXCHANGE)
    while replicated_total(SAFE) < want:
        time.sleep(2)
    print(f"exchange = safe copy = {want} rows after {time.monotonic() - started:.0f} s")
    started = time.monotonic()
    # The previous release's layout (before Taler's, docs/deployment.md).
    run_as(f"{PREFIX}auditor", TALER_OPS, "audit", "-t", "-c", f"{ETC}/auditor/auditor.conf")
    print(f"steady-state audit of the history: {time.monotonic() - started:.0f} s")

    playbook_env = dict(env, ANSIBLE_PIPELINING="False", ANSIBLE_REMOTE_TMP="/tmp")
    subprocess.run(
        [os.path.join(VENV_BIN, "ansible-playbook"), "-i", "inventories/local/hosts.yml",
         "-e", "@molecule/upgrade/vars/main.yml", "molecule/upgrade/replace_stand_in.yml"],
        cwd=ROOT, check=True, capture_output=True, env=playbook_env)
    started = time.monotonic()
    proc = subprocess.run(
        [os.path.join(VENV_BIN, "ansible-playbook"), "-i", "inventories/local/hosts.yml",
         "-e", "@molecule/upgrade/vars/main.yml", "playbooks/upgrade.yml"],
        cwd=ROOT, capture_output=True, text=True, env=playbook_env)
    took = time.monotonic() - started
    output = proc.stdout + proc.stderr
    if proc.returncode != 0:
        sys.exit(f"upgrade.yml failed:\n{output[-5000:]}")
    halted = re.search(r"business logic halted for ([0-9.]+) s", output)
    print(f"upgrade.yml took {took:.1f} s in all")
    print(f"business logic halted for {halted.group(1) if halted else '?'} s "
          f"with {want} rows in the exchange database (goal <= 60 s)")
    for line in output.splitlines():
        if "Backup of" in line or "Upgrading to" in line:
            print("  " + line.strip().strip('"'))
    if not args.keep:
        molecule("cleanup", env)
        shutil.rmtree(secrets)


if __name__ == "__main__":
    main()
