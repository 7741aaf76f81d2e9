"""The auditor's report (`taler-ops report`), read from a Taler-built auditor database.

Each test builds the auditor schema from Taler's own SQL files (auditor-0001/0002)
and fills it with INSERTs, as Taler's helpers or taler-ops' audit would (tests/report_data.py);
the report must show exactly those findings and figures, and its HTML, JSON and text forms
must carry the same numbers (tests/report_forms.py).  A real browser loads the HTML in
tests/test_report_browser.py; the playbook renders it in tests/test_report_playbook.py;
audits of generated histories are reported in tests/test_report_end_to_end.py.
"""

import json
import os
import re

import psycopg

from conftest import ROOT
from report_data import (BALANCES, CUR, FINDINGS, MEASURES, SUMMARY, amt, auditor_db, b32, fill,
                         k, safe_copy_with_sync_state)
from report_forms import assert_forms_agree, config, html_facts, report, three_forms
from taler_build import build_taler_auditor


def test_a_clean_auditor_database_reports_no_findings(cluster, conf, cli, sql_root, tmp_path):
    uri = auditor_db(cluster, "report_clean", sql_root)
    with psycopg.connect(uri, autocommit=True) as conn:
        conn.execute("INSERT INTO auditor.auditor_progress VALUES "
                     "('reserves_reserve_in_serial_id', 8)")
        conn.execute(f"INSERT INTO auditor.auditor_balances VALUES (DEFAULT, "
                     f"'reserves_withdraw_fee_revenue', {amt('0.02')})")
    model, text, html_text = three_forms(cli, config(conf, uri), tmp_path)
    s = model["summary"]
    assert (s["findings_open"], s["findings_suppressed"], s["tables_with_findings"]) == (0, 0, 0)
    assert (s["loss_total"], s["risk_total"], s["at_issue_total"]) == ("KUDOS:0",) * 3
    assert s["fee_revenue"] == "KUDOS:0.02"
    assert s["losses"] == s["risks"] == s["at_issue"] == s["unreadable_tables"] == []
    assert len(model["sections"]) == 22
    assert all(sec["rows"] == sec["suppressed_rows"] == [] for sec in model["sections"])
    a = model["audited"]
    assert a["patch_level"] == "auditor-0002"
    assert a["exchange_url"] == "https://exchange.example.org/" and a["currency"] == CUR
    assert a["progress"] == [{"key": "reserves_reserve_in_serial_id", "helper": "reserves",
                              "table": "reserves_in", "next": 8, "covered": "1 … 7"}]
    assert model["sync"]["available"] is False
    assert "exchangedb-postgres" in model["sync"]["reason"]
    assert "No open findings." in html_text
    assert "open findings                      0" in text
    # Filled as Taler's helpers fill it: no run history, and every form says so
    h = model["history"]
    assert (h["available"], h["recorded"], h["points"]) == (False, 0, [])
    assert "no taler_ops.audit_runs" in h["reason"]
    assert html_facts(html_text).attrs["data-fact"]["history.none"] == " ".join(
        h["reason"].split())
    assert "No history to draw" in html_text
    assert 'class="chart timechart"' not in html_text
    assert f"  no history: {h['reason']}" in text
    assert_forms_agree(model, text, html_text)


def test_every_report_table_is_shown_with_exactly_its_findings(cluster, conf, cli, sql_root,
                                                               tmp_path):
    uri = auditor_db(cluster, "report_full", sql_root)
    ids = fill(uri)
    safe = safe_copy_with_sync_state(cluster, "report_full_safe")
    model, text, html_text = three_forms(cli, config(conf, uri, safe), tmp_path)
    sections = {s["table"]: s for s in model["sections"]}
    assert set(sections) == set(FINDINGS)
    for table, by_flag in ids.items():
        sec = sections[table]
        assert [r["row_id"] for r in sec["rows"]] == by_flag[False], table
        assert [r["row_id"] for r in sec["suppressed_rows"]] == by_flag[True], table
        assert (sec["open"], sec["suppressed"]) == (len(by_flag[False]), len(by_flag[True]))
        assert "unavailable" not in sec
    measures = {f"{s['table']}.{m['name']}": m["amount"] for s in model["sections"]
                for m in s["measures"]}
    assert measures == MEASURES
    s = model["summary"]
    got = {"open findings": s["findings_open"], "suppressed findings": s["findings_suppressed"],
           "report tables with open findings": s["tables_with_findings"],
           "losses found": s["loss_total"], "at risk": s["risk_total"],
           "amounts at issue": s["at_issue_total"],
           "losses in the auditor's balances": s["balance_losses"],
           "risk in the auditor's balances": s["balance_risk"], "fee revenue": s["fee_revenue"]}
    assert got == SUMMARY
    # Row contents: a finding's amounts, keys and times as Taler shows them.
    bad = sections["auditor_bad_sig_losses"]["rows"][0]
    assert bad == {"row_id": ids["auditor_bad_sig_losses"][False][0], "problem_row_id": 10,
                   "operation": "melt", "loss": "KUDOS:1.5", "operation_specific_pub": b32(k(1))}
    not_closed = sections["auditor_reserve_not_closed_inconsistency"]["rows"]
    assert [r["expiration_time"] for r in not_closed] == ["2026-01-01 00:00:00Z", None]
    assert sections["auditor_denominations_without_sigs"]["rows"][0]["end_time"] is None
    # Balances: every key, a NULL one included; fee revenue by key.
    balances = {b["key"]: b["value"] for b in model["balances"]}
    assert balances == {**{k_: f"KUDOS:{v}" for k_, v in BALANCES.items()},
                        "purse_global_balance": None}
    assert sorted(b["key"] for b in model["revenue"]["fee_revenue"]) == sorted(
        ["coins_deposit_fee_revenue", "reserves_withdraw_fee_revenue",
         "aggregation_total_wire_fee_revenue"])
    r = model["revenue"]
    assert [d["revenue"] for d in r["historic_denominations"]] == ["KUDOS:3", "KUDOS:1.5"]
    assert [(d["balance"], d["issued"]) for d in r["pending_denominations"]] == [
        ("KUDOS:20", 12), ("KUDOS:5", 3)]
    assert r["reserves"] == {"count": 2, "balance": "KUDOS:9", "loss": "KUDOS:0",
                             "fee_balance": "KUDOS:0.2"}
    # Progress: ranges covered, and how far the audit is behind the safe copy.
    progress = {p["key"]: p for p in model["audited"]["progress"]}
    assert progress["coins_withdraw_serial_id"] == {
        "key": "coins_withdraw_serial_id", "helper": "coins", "table": "reserves_out",
        "next": 101, "covered": "1 … 100", "synced": 140, "behind": 40}
    assert progress["reserves_reserve_in_serial_id"]["behind"] == 0
    assert progress["aggregation_last_wire_out_serial_id"]["covered"] == "none yet"
    assert progress["purse_open_counter"]["covered"] == "counter 3"
    # Sync: the open hole and the open halt, not the expired hole or the cleared halt.
    sync = model["sync"]
    assert sync["available"] is True
    assert model["audited"]["last_sync"] == "2026-01-02 03:04:05Z"
    assert sync["holes"] == [{"table": "reserves_out", "from": 121, "to": 123,
                              "seen": "2026-01-02 03:04:00Z"}]
    assert [(h["table"], h["serial"], h["rule"]) for h in sync["halts"]] == [
        ("coin_deposits", 77, "late-row")]
    assert sync["cleared_halts"] == 1
    # The three forms carry the same numbers.
    assert_forms_agree(model, text, html_text)
    facts = html_facts(html_text)
    assert facts.attrs["data-fact"]["sync.holes"] == "1"
    assert facts.attrs["data-fact"]["sync.halts"] == "1"
    assert "  last sync 2026-01-02 03:04:05Z; 1 open hole(s), 1 open halt(s), 1 cleared" in text
    # Charts are inline SVG; nothing is fetched at view time.
    assert html_text.count("<svg ") == 3
    assert not re.search(r"""(src|href)=["']?(https?:)?//""", html_text)
    assert "<link" not in html_text


def test_since_an_earlier_report_lists_only_new_findings(cluster, conf, cli, sql_root, tmp_path):
    uri = auditor_db(cluster, "report_since", sql_root)
    fill(uri)
    cfg = config(conf, uri)
    earlier = tmp_path / "earlier.json"
    assert cli("report", "-c", cfg, "-o", earlier).returncode == 0
    with psycopg.connect(uri, autocommit=True) as conn:
        new = conn.execute("INSERT INTO auditor.auditor_bad_sig_losses (problem_row_id, operation, "
                           f"loss, operation_specific_pub) VALUES (13, 'refund', {amt('0.75')}, "
                           "%s) RETURNING row_id", (k(30),)).fetchone()[0]
    model = json.loads(report(cli, cfg, "--format", "json", "--since", earlier))
    assert model["since"]["report"] == str(earlier)
    shown = {s["table"]: [r["row_id"] for r in s["rows"] + s["suppressed_rows"]]
             for s in model["sections"] if s["rows"] or s["suppressed_rows"]}
    assert shown == {"auditor_bad_sig_losses": [new]}
    assert model["summary"]["findings_open"] == 1
    assert model["summary"]["loss_total"] == "KUDOS:0.75"
    # Balances are cumulative and stay current.
    assert model["summary"]["fee_revenue"] == "KUDOS:2.5"
    bad = tmp_path / "bad.json"
    bad.write_text("{}")
    done = cli("report", "-c", cfg, "--since", bad)
    assert done.returncode == 2 and "not a taler-ops report" in done.stderr


def test_tables_not_of_talers_shape_and_a_missing_taler_ops_schema(cluster, conf, cli, sql_root):
    uri = auditor_db(cluster, "report_odd", sql_root)
    plain = cluster.createdb("report_odd_exchange")         # reachable, no taler_ops schema
    with psycopg.connect(uri, autocommit=True) as conn:
        conn.execute("DROP TABLE auditor.auditor_closure_lags")
        conn.execute("ALTER TABLE auditor.auditor_wire_format_inconsistency "
                     "DROP COLUMN wire_offset")
        conn.execute("INSERT INTO auditor.auditor_row_inconsistency (row_table, diagnostic, "
                     "problem_row_id) VALUES ('x', 'y', 1)")
    model = json.loads(report(cli, config(conf, uri, plain), "--format", "json"))
    sections = {s["table"]: s for s in model["sections"]}
    assert "does not exist" in sections["auditor_closure_lags"]["unavailable"]
    assert "wire_offset" in sections["auditor_wire_format_inconsistency"]["unavailable"]
    assert model["summary"]["unreadable_tables"] == ["auditor_closure_lags",
                                                     "auditor_wire_format_inconsistency"]
    assert model["summary"]["findings_open"] == 1
    assert model["sync"]["available"] is False
    assert "taler_ops.sync_watermarks" in model["sync"]["reason"]
    # An unreachable safe copy is a note in the report, not a failure.
    down = config(conf, uri, "postgresql:///nowhere?host=/nonexistent&port=1", name="down.conf")
    model = json.loads(report(cli, down, "--format", "json"))
    assert "cannot connect" in model["sync"]["reason"]


def test_exit_codes(cluster, conf, cli, fresh_db, tmp_path):
    # A database without Taler's auditor schema: Taler's "not installed".
    done = cli("report", "-c", config(conf, fresh_db))
    assert done.returncode == 5 and "no schema auditor" in done.stderr
    nowhere = "postgresql:///x?host=/nonexistent&port=1"
    done = cli("report", "-c", config(conf, nowhere, name="n.conf"))
    assert done.returncode == 5 and "cannot connect" in done.stderr
    done = cli("report", "-c", conf("empty.conf", {"exchange": {"CURRENCY": CUR}}))
    assert done.returncode == 6 and "auditordb-postgres" in done.stderr
    assert cli("report", "--format", "pdf").returncode == 2
    done = cli("report", "-c", config(conf, fresh_db, name="o.conf"), "-o",
               tmp_path / "missing-dir" / "r.html")
    assert done.returncode == 5             # the database is checked before the file


def test_the_installed_package_ships_the_template():
    import tomllib
    with open(os.path.join(ROOT, "pyproject.toml"), "rb") as fh:
        project = tomllib.load(fh)
    data = project["tool"]["setuptools"]["package-data"]["taler_ops.audit"]
    templates = os.path.join(ROOT, "plugins", "module_utils", "taler_ops", "audit", "templates")
    import fnmatch
    shipped = [n for n in os.listdir(templates) if any(fnmatch.fnmatch(f"templates/{n}", p)
                                                       for p in data)]
    assert shipped == ["report.html.j2"]
    assert any(d.lower().startswith("jinja2") for d in project["project"]["dependencies"])


def test_an_auditor_database_built_by_taler_ops_dbinit_is_reported(fresh_db, conf, cli):
    """The model's auditor schema is Taler's: every report table is readable."""
    cfg = config(conf, fresh_db)
    assert cli("auditor-dbinit", "-c", cfg).returncode == 0
    model = json.loads(report(cli, cfg, "--format", "json"))
    assert model["summary"]["findings_open"] == 0
    assert model["summary"]["unreadable_tables"] == []
    assert sorted(s["table"] for s in model["sections"]) == sorted(FINDINGS)


def test_the_last_audit_is_the_commit_time_of_the_progress_points(conf, cli, sql_root):
    """With track_commit_timestamp on, whoever moved the progress points last dates the audit."""
    from pgcluster import Cluster
    c = Cluster("report-commit-ts", settings={"track_commit_timestamp": "on"}).start()
    try:
        uri = build_taler_auditor(c.createdb("report_ts"), sql_root=sql_root)
        cfg = config(conf, uri, name="ts.conf")
        model = json.loads(report(cli, cfg, "--format", "json"))
        assert model["audited"]["last_audit"] is None
        assert "no progress point was written" in model["audited"]["last_audit_source"]
        with psycopg.connect(uri, autocommit=True) as conn:
            conn.execute("INSERT INTO auditor.auditor_progress "
                         "VALUES ('coins_deposit_serial_id', 3)")
            committed = conn.execute(
                "SELECT to_char(pg_xact_commit_timestamp(xmin) AT TIME ZONE 'UTC', "
                "'YYYY-MM-DD HH24:MI:SS\"Z\"') FROM auditor.auditor_progress").fetchone()[0]
        model = json.loads(report(cli, cfg, "--format", "json"))
        assert model["audited"]["last_audit"] == committed
        assert model["audited"]["last_audit_source"] == "commit time of the last progress update"
    finally:
        c.destroy()
