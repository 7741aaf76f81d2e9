"""playbooks/report.yml: the report rendered on the auditor host and fetched."""

import json
import os
import subprocess

import pytest

from conftest import ROOT
from report_data import SUMMARY, auditor_db, fill
from report_forms import assert_forms_agree


@pytest.mark.skipif(os.geteuid() != 0, reason="renders as the auditor's user through runuser: "
                                              "needs root")
def test_the_report_playbook_renders_on_the_host_and_fetches(cluster, sql_root, tmp_path):
    import sys
    uri = auditor_db(cluster, "report_playbook", sql_root)
    fill(uri)
    etc = tmp_path / "etc" / "taler-auditor"
    etc.mkdir(parents=True)
    # The auditor host's main configuration (the safe_copy role's taler-auditor.conf,
    # here without conf.d/ and secrets/, and no [exchange]).
    (etc / "taler-auditor.conf").write_text(f"[auditordb-postgres]\nCONFIG = {uri}\n")
    inventory = tmp_path / "hosts.yml"
    venv_bin = os.path.dirname(sys.executable)
    inventory.write_text(
        "all:\n  children:\n    auditor:\n      hosts:\n        auditor-test:\n"
        "          ansible_connection: local\n"
        f"          ansible_python_interpreter: {sys.executable}\n")
    local = tmp_path / "controller"
    done = subprocess.run(
        [os.path.join(venv_bin, "ansible-playbook"), "-i", str(inventory),
         os.path.join(ROOT, "playbooks", "report.yml"),
         "-e", f"taler_venv={os.path.dirname(venv_bin)}",
         "-e", f"safe_copy_config_dir={etc}",
         "-e", "safe_copy_auditor_user=root", "-e", f"taler_state_dir={tmp_path / 'state'}",
         "-e", f"taler_report_local_dir={local}", "-e", "taler_report_currency=KUDOS",
         "-e", '{"taler_report_formats": ["html", "json", "text"]}'],
        cwd=ROOT, capture_output=True, text=True, timeout=600,
        env=dict(os.environ, ANSIBLE_CONFIG=os.path.join(ROOT, "ansible.cfg"), ANSIBLE_NOCOLOR="1",
                 PATH=venv_bin + os.pathsep + os.environ.get("PATH", "")))
    assert done.returncode == 0, done.stdout[-6000:] + done.stderr[-3000:]
    fetched = sorted(os.listdir(local))
    assert [os.path.splitext(n)[1] for n in fetched] == [".html", ".json", ".txt"]
    assert len({os.path.splitext(n)[0] for n in fetched}) == 1      # one run, one name
    assert fetched[0].startswith("auditor-report-auditor-test-")
    model = json.loads((local / fetched[1]).read_text())
    assert model["summary"]["loss_total"] == SUMMARY["losses found"]
    assert model["audited"]["currency"] == "KUDOS"
    assert_forms_agree(model, (local / fetched[2]).read_text(), (local / fetched[0]).read_text())
    on_host = sorted(os.listdir(tmp_path / "state" / "reports"))
    assert on_host == fetched
    assert "55 open finding(s)" in done.stdout
