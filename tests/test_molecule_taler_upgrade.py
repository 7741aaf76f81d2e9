"""molecule/taler-upgrade: a GNU Taler release upgrade, end to end, under live traffic.

The "next release" (taler_build.next_release) is derived from Taler's v0.14 SQL files
at test time, in a temporary directory: exchange-0008 adds the nullable column
``reserves_in.origin_note`` and the table ``wire_notes``, auditor-0003 an auditor table.

``molecule test -s taler-upgrade`` deploys molecule/taler's topology from v0.14 with
live traffic, runs playbooks/upgrade.yml with the next release's directories while
the traffic runs, and verifies (molecule/taler-upgrade/verify.yml).  Skips, saying
why, without Taler's SQL files or without root.
"""

import os

import pytest

from molecule_helpers import assert_no_password_leaked, run_scenario, scenario_env
from taler_build import DEFAULT_SQL_DIR, next_release, taler_sql_root


@pytest.mark.skipif(os.geteuid() != 0, reason="creates UNIX users and instances: needs root")
def test_molecule_taler_release_upgrade_under_traffic(tmp_path):
    root = taler_sql_root()
    if root is None or not os.path.isfile(os.path.join(root, "auditor", "auditor-0001.sql")):
        pytest.skip("Taler's SQL files are not available: set TALER_SQL_DIR to a directory "
                    f"with exchange/ and auditor/ (default {DEFAULT_SQL_DIR})")
    nxt = next_release(root, tmp_path / "next-release")
    secrets = tmp_path / "secrets"
    env = dict(scenario_env(secrets), TALER_SQL_DIR=os.path.abspath(root),
               TALER_NEXT_SQL_DIR=str(nxt))
    output = run_scenario("taler-upgrade", env, timeout=1800)
    assert_no_password_leaked(secrets, output)
    # The upgrade's own account and the rows after it, for the log of the run.
    for line in output.splitlines():
        if len(line) < 400 and any(k in line for k in ("halted for", "Not copied into",
                                                       "reached the safe copy")):
            print(line.strip())
    assert "Upgrading to auditor-0003 exchange-0008" in output
    assert "No row lost, verify clean and honest about the column it does not copy" in output
