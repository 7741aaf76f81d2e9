"""molecule/tamper: deploy, tamper with ingres, the sync service halts, status says why,
the safe copy is unchanged (issue 9).  Needs root, like molecule/default."""

import os

import pytest

from molecule_helpers import run_scenario, scenario_env


@pytest.mark.skipif(os.geteuid() != 0, reason="creates UNIX users and instances: needs root")
def test_molecule_tamper_scenario():
    output = run_scenario("tamper", scenario_env(), timeout=1200)
    assert "Check the halt, the status and the safe copy" in output
