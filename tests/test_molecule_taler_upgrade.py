"""molecule/taler-upgrade: the whole topology built from GNU Taler's own SQL files (issue 18),
then a GNU Taler release upgrade of it, end to end, under live traffic.

The "next release" (taler_build.next_release) is derived from Taler's v0.14 SQL files
at test time, in a temporary directory: exchange-0008 adds the nullable column
``reserves_in.origin_note`` and the table ``wire_notes``, auditor-0003 an auditor table.

``molecule test -s taler-upgrade`` runs cleanup, syntax, converge (playbooks/site.yml with
taler_exchange_sql_dir / taler_auditor_sql_dir from v0.14, live traffic), side_effect (with
the traffic halted: a bulk history, replication, sync, verify, audit and status), idempotence,
verify (the Taler-built deployment; playbooks/upgrade.yml to the next release while the
traffic runs; the upgraded deployment) and cleanup, and this test greps its verbose output
for every password the deployment generated.  Skips, saying why, without Taler's SQL files
or without root.
"""

import os

import pytest

from molecule_helpers import assert_no_password_leaked, run_scenario, scenario_env
from taler_build import DEFAULT_SQL_DIR, next_release, taler_sql_root


@pytest.mark.skipif(os.geteuid() != 0, reason="creates UNIX users and instances: needs root")
def test_molecule_taler_deployment_and_release_upgrade_under_traffic(tmp_path):
    root = taler_sql_root()
    if root is None or not os.path.isfile(os.path.join(root, "auditor", "auditor-0001.sql")):
        pytest.skip("Taler's SQL files are not available: set TALER_SQL_DIR to a directory "
                    f"with exchange/ and auditor/ (default {DEFAULT_SQL_DIR})")
    nxt = next_release(root, tmp_path / "next-release")
    secrets = tmp_path / "secrets"
    env = dict(scenario_env(secrets), TALER_SQL_DIR=os.path.abspath(root),
               TALER_NEXT_SQL_DIR=str(nxt))
    # A hang guard only: the two scenarios this one replaced had 1800 s each.
    output = run_scenario("taler-upgrade", env, timeout=3600)
    assert_no_password_leaked(secrets, output)
    # The upgrade's own account and the rows after it, for the log of the run.
    for line in output.splitlines():
        if len(line) < 400 and any(k in line for k in ("halted for", "Not copied into",
                                                       "reached the safe copy")):
            print(line.strip())
    # The deployment from Taler's files (side_effect, then verify's deployed.yml).
    assert "Assert traffic, replication, sync, verify and audit" in output
    assert "Assert peer authentication, no password, nobody else" in output
    assert "Assert Taler-built copies and the sync's parameter privilege" in output
    # The upgrade (verify's upgrade_to_next.yml and upgraded.yml).
    assert "Upgrading to auditor-0003 exchange-0008" in output
    assert "No row lost, verify clean and honest about the column it does not copy" in output
