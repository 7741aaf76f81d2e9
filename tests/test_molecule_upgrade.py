"""molecule/upgrade: the previous release deployed, upgraded under live traffic.

Runs ``molecule test -s upgrade``: cleanup, converge (the previous release's own
checkout, exported from git, deploys with its site.yml; live traffic starts),
side_effect (this checkout's playbooks/upgrade.yml), verify (no row lost or
duplicated, model-exchange-0002's table arrives, the auditor database moves to
Taler's tables and a clean audit starts over,
backup present, old tools refuse the new schema, a second upgrade changes
nothing), cleanup.  Then greps the verbose output for every password.
"""

import os
import subprocess

import pytest

from molecule_helpers import ROOT, assert_no_password_leaked, run_scenario, scenario_env

PREVIOUS_RELEASE = "4a6060a8123b7d18bfbf5dd18045da3b803013af"


def _has_previous_release():
    return subprocess.run(["git", "-C", ROOT, "cat-file", "-e", PREVIOUS_RELEASE + "^{commit}"],
                          capture_output=True).returncode == 0


@pytest.mark.skipif(os.geteuid() != 0, reason="creates UNIX users and instances: needs root")
@pytest.mark.skipif(not _has_previous_release(),
                    reason=f"the previous release {PREVIOUS_RELEASE[:12]} is not in this clone's "
                           "history (shallow clone?): nothing to upgrade from")
def test_molecule_upgrade_scenario(tmp_path):
    secrets = tmp_path / "secrets"
    output = run_scenario("upgrade", scenario_env(secrets))
    upgrading = [line for line in output.splitlines() if "Upgrading to " in line]
    assert any("model-exchange-0002" in line for line in upgrading), "the upgrade did not run"
    # The previous release generated passwords for the local service roles too; none of
    # them, old or new, may appear in the output.
    assert_no_password_leaked(secrets, output, names=None)
