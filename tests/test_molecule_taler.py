"""molecule/taler: the whole topology built from GNU Taler's own SQL files (issue 18).

Runs ``molecule test -s taler`` (cleanup, syntax, converge = playbooks/site.yml with
taler_exchange_sql_dir / taler_auditor_sql_dir, side_effect = traffic, replication,
sync, verify, audit and status, idempotence, verify, cleanup) and greps its verbose
output for every password the deployment generated.  Skips, saying why, when Taler's
SQL files are absent.  Needs root, like molecule/default.
"""

import os

import pytest

from molecule_helpers import assert_no_password_leaked, run_scenario, scenario_env
from taler_build import DEFAULT_SQL_DIR, taler_sql_root


@pytest.mark.skipif(os.geteuid() != 0, reason="creates UNIX users and instances: needs root")
def test_molecule_taler_scenario(tmp_path):
    root = taler_sql_root()
    if root is None or not os.path.isfile(os.path.join(root, "auditor", "auditor-0001.sql")):
        pytest.skip("Taler's SQL files are not available: set TALER_SQL_DIR to a directory "
                    f"with exchange/ and auditor/ (default {DEFAULT_SQL_DIR})")
    secrets = tmp_path / "secrets"
    env = dict(scenario_env(secrets), TALER_SQL_DIR=os.path.abspath(root))
    output = run_scenario("taler", env, timeout=1800)
    assert_no_password_leaked(secrets, output)
    assert "Assert traffic, replication, sync, verify and audit" in output
