"""Reports of what the audit stored: generated misbehaviour (generate --inject) audited, then
reported table by table; audit runs as the history the report charts."""

import json
import os
import re

import psycopg
import pytest

from audit_helpers import GEN_NOW
from report_data import CUR, FINDINGS
from report_forms import assert_forms_agree, html_facts, report, three_forms
from taler_build import require_taler_sql


def test_generated_misbehaviour_audited_then_reported(cluster, conf, cli, tmp_path):
    """generate --inject (economic and forged-signature kinds) -> audit -> report: the report
    shows, table by table, exactly the findings the audit stored."""
    from taler_ops.sim import inject
    ex, aud = cluster.createdb("report_e2e_ex"), cluster.createdb("report_e2e_aud")
    master = cli("generate", "--show-master-key", "--seed", 11).stdout.strip()
    sections = {"exchange": {"CURRENCY": CUR, "MASTER_PUBLIC_KEY": master,
                             "BASE_URL": "https://exchange.demo.taler.net/"},
                "exchangedb-postgres": {"CONFIG": ex}, "auditordb-postgres": {"CONFIG": aud}}
    cfg = conf("e2e.conf", sections)
    for step in (("exchange-dbinit",), ("auditor-dbinit",)):
        done = cli(*step, "-c", cfg)
        assert done.returncode == 0, done.stderr
    kinds = ",".join(list(inject.KINDS)[:3] + ["bad_sig_deposit", "bad_sig_withdraw"])
    done = cli("generate", "-c", cfg, "--rows", 3000, "--seed", 11, "--now", GEN_NOW,
               "--inject", kinds, "--record", tmp_path / "planted.json")
    assert done.returncode == 0, done.stderr
    done = cli("audit", "-c", cfg, "-t", "--now", GEN_NOW, "--report", tmp_path / "audit.json")
    assert done.returncode == 0, done.stderr
    audit = json.loads((tmp_path / "audit.json").read_text())
    planted = json.loads((tmp_path / "planted.json").read_text())
    assert len(planted) == 5 and len(audit["findings"]) >= 5
    stored = {}
    for f in audit["findings"]:
        stored[f["taler_table"]] = stored.get(f["taler_table"], 0) + 1
    model, text, html_text = three_forms(cli, cfg, tmp_path)
    assert model["summary"]["unreadable_tables"] == []
    shown = {s["table"]: s["open"] for s in model["sections"] if s["open"]}
    assert shown == {t: n for t, n in stored.items() if t in FINDINGS}
    assert "auditor_bad_sig_losses" in shown
    progress = {p["key"]: p for p in model["audited"]["progress"]}
    assert progress["signatures_coin_deposits_coin_sig_serial_id"]["table"] == "coin_deposits"
    assert progress["signatures_coin_deposits_coin_sig_serial_id"]["helper"] == "signatures"
    assert_forms_agree(model, text, html_text)


def _db_counts(uri):
    """Straight from the auditor database: unsuppressed and suppressed rows per report table."""
    with psycopg.connect(uri) as conn:
        by_table, suppressed = {}, 0
        for t in FINDINGS:
            n_open, n_supp = conn.execute(
                f"SELECT count(*) FILTER (WHERE NOT suppressed), count(*) FILTER (WHERE "
                f"suppressed) FROM auditor.{t}").fetchone()
            if n_open:
                by_table[t] = n_open
            suppressed += n_supp
        return by_table, suppressed


@pytest.mark.parametrize("flavour", ["model", "taler"])
def test_audit_runs_are_the_history_the_report_charts(cluster, conf, cli, tmp_path, flavour):
    """Audits with findings injected between them: each run is a point of the report's
    history, equal to the auditor database's counts right after it; a run that changes
    nothing is merged into the point before it; the three forms carry the same numbers."""
    if flavour == "taler":
        sql_dir = os.path.join(require_taler_sql(), "auditor") + "/"
    ex = cluster.createdb(f"hist_ex_{flavour}")
    aud = cluster.createdb(f"hist_aud_{flavour}")
    master = cli("generate", "--show-master-key", "--seed", 11).stdout.strip()
    auditordb = {"CONFIG": aud}
    if flavour == "taler":
        auditordb["SQL_DIR"] = sql_dir
    cfg = conf(f"hist-{flavour}.conf",
               {"exchange": {"CURRENCY": CUR, "MASTER_PUBLIC_KEY": master,
                             "BASE_URL": "https://exchange.demo.taler.net/"},
                "exchangedb-postgres": {"CONFIG": ex}, "auditordb-postgres": auditordb})
    for step in (("exchange-dbinit",), ("auditor-dbinit",)):
        done = cli(*step, "-c", cfg)
        assert done.returncode == 0, done.stderr
    model = json.loads(report(cli, cfg, "--format", "json"))
    assert model["history"]["available"] is False and model["history"]["points"] == []
    assert "no audit run recorded yet" in model["history"]["reason"]

    expected = []                 # (open per table, suppressed) after each recorded run
    for seed, kinds in ((11, None), (12, "reserve_overdraft"),
                        (13, "bad_sig_deposit,coin_overspend")):
        args = ["generate", "-c", cfg, "--rows", 1200, "--seed", seed, "--master-seed", 11,
                "--now", GEN_NOW]
        if kinds:
            args += ["--inject", kinds]
        done = cli(*args)
        assert done.returncode == 0, done.stderr
        done = cli("audit", "-c", cfg, "-t", "--now", GEN_NOW)
        assert done.returncode == 0, done.stderr
        expected.append(_db_counts(aud))
    assert expected[0] == ({}, 0)
    assert sum(expected[1][0].values()) > 0
    assert sum(expected[2][0].values()) > sum(expected[1][0].values())
    # An operator suppresses a finding: the next run's point shows it; one more run
    # that changes nothing is merged into that point.
    with psycopg.connect(aud, autocommit=True) as conn:
        conn.execute("UPDATE auditor.auditor_bad_sig_losses SET suppressed = TRUE "
                     "WHERE row_id = (SELECT min(row_id) FROM auditor.auditor_bad_sig_losses)")
    for _ in range(2):
        done = cli("audit", "-c", cfg, "-t", "--now", GEN_NOW)
        assert done.returncode == 0, done.stderr
    expected.append(_db_counts(aud))
    assert expected[3][1] == 1

    model, text, html_text = three_forms(cli, cfg, tmp_path)
    h = model["history"]
    assert h["available"] and h["recorded"] == 4
    points = h["points"]
    assert [(p["open_by_table"], p["findings_suppressed"]) for p in points] == expected
    assert [p["findings_open"] for p in points] == [sum(e[0].values()) for e in expected]
    assert [p["runs"] for p in points] == [1, 1, 1, 2]
    assert points[0]["rows_examined"] > 0
    assert all(p["sync_age_seconds"] is None for p in points)     # not a safe copy
    # the newest point is the report's own summary
    s = model["summary"]
    last = points[-1]
    assert (last["findings_open"], last["findings_suppressed"], last["loss_total"],
            last["risk_total"], last["at_issue_total"], last["fee_revenue"]) == (
        s["findings_open"], s["findings_suppressed"], s["loss_total"], s["risk_total"],
        s["at_issue_total"], s["fee_revenue"])
    assert parse(last["loss_total"]) > parse(points[1]["loss_total"]) >= 0
    assert points[0]["loss_total"] == f"{CUR}:0"
    # HTML: the charts and every point; text: the same numbers in its short table
    assert "Findings over time" in html_text and "Losses and risk over time" in html_text
    assert html_text.count('class="chart timechart"') == 2
    assert re.findall(r'<tr data-history="(\d+)">', html_text) == [str(p["run_id"])
                                                                    for p in points]
    facts = html_facts(html_text)
    assert facts.attrs["data-fact"]["history.recorded"] == "4"
    rows = [ln.split() for ln in text.splitlines()
            if re.match(r"^  \d{4}-\d\d-\d\d \d\d:\d\d:\d\dZ  ", ln)]
    assert [(int(r[2]), int(r[3]), int(r[4]), r[5], r[6], r[7]) for r in rows] == [
        (p["runs"], p["findings_open"], p["findings_suppressed"], p["loss_total"],
         p["risk_total"], p["at_issue_total"]) for p in points]
    assert_forms_agree(model, text, html_text)


def parse(text):
    from taler_ops.audit import report as report_mod
    return report_mod.parse_amount(text)
