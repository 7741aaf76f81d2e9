"""molecule/default: the whole topology converged on this machine.

Runs ``molecule test -s default`` (cleanup, syntax, converge = playbooks/site.yml,
idempotence, verify, cleanup) and then greps its verbose (-v) output for every
password the deployment generated.  Needs root: it creates UNIX users and
PostgreSQL instances (on their own ports and paths, apart from ``make demo``).
"""

import os

import pytest

from molecule_helpers import assert_no_password_leaked, run_scenario, scenario_env


@pytest.mark.skipif(os.geteuid() != 0, reason="creates UNIX users and instances: needs root")
def test_molecule_default_scenario(tmp_path):
    secrets = tmp_path / "secrets"
    output = run_scenario("default", scenario_env(secrets), timeout=1200)
    assert_no_password_leaked(secrets, output)
    # The grep above means something only if the verbose run happened.
    assert "ok: [auditor-local] => {" in output or '"changed": false' in output
