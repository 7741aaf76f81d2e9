"""Alert rules, their promtool unit tests and the Grafana dashboard (monitoring/).

No database: the metric names the code exports come from rendering status reports of
every shape (tests/monitoring_reports.py) with ``metrics.render``.
"""

import glob
import importlib.util
import json
import os
import re
import shutil
import subprocess

import pytest
import yaml
from prometheus_client.parser import text_string_to_metric_families

import monitoring_reports as reports
from conftest import ROOT
from taler_ops.monitor import metrics


def _samples(report):
    """{(sample name, sorted labels): value} of one rendered report."""
    return {(s.name, tuple(sorted(s.labels.items()))): s.value
            for fam in text_string_to_metric_families(metrics.render(report))
            for s in fam.samples}


def exported_names():
    return {name for report in reports.every() for name, _ in _samples(report)}


def test_metrics_added_for_the_alerts():
    pub = _samples(reports.publisher())
    assert pub[("taler_ops_slot_safe_wal_bytes", (("slot", "taler_sub"),))] == 1000
    daemon = _samples(reports.daemon())
    assert daemon[("taler_ops_sync_rows_copied_total", (("table", "coin_deposits"),))] == 10
    assert daemon[("taler_ops_report_timestamp_seconds", (("parts", "ingres+safe_copy"),))] \
        == reports.NOW.timestamp()
    assert daemon[("taler_ops_healthy", (("parts", "ingres+safe_copy"),))] == 1
    assert "# TYPE taler_ops_sync_rows_copied_total counter" in metrics.render(reports.daemon())


def test_promtool_lints_the_exposition():
    promtool = _promtool()
    for report in reports.every():
        out = subprocess.run([promtool, "check", "metrics"], input=metrics.render(report),
                             capture_output=True, text=True)
        assert out.returncode == 0, out.stdout + out.stderr


def test_no_safe_wal_series_without_a_limit():
    report = reports.publisher()
    report["publisher"]["slots"][0]["safe_wal_size"] = None  # max_slot_wal_keep_size = -1
    assert not any(n == "taler_ops_slot_safe_wal_bytes" for n, _ in _samples(report))


def test_writers_sharing_a_textfile_directory_never_export_the_same_series():
    """node_exporter refuses a series that two .prom files both contain."""
    seen = {}
    for report in (reports.publisher(), reports.daemon(), reports.audit()):
        for key in _samples(report):
            assert key not in seen, f"{key} exported by two writers"
            seen[key] = report


# --- alert rules --------------------------------------------------------------------

PROM = os.path.join(ROOT, "monitoring", "prometheus")
RULES = os.path.join(PROM, "taler-ops-alerts.yml")
RULE_TESTS = sorted(glob.glob(os.path.join(PROM, "tests", "*.yml")))

# PromQL words that are neither metric names nor functions (those are followed by "(").
_KEYWORDS = {"and", "or", "unless", "bool", "offset", "inf", "nan", "Inf", "NaN"}


def metric_names(expr):
    """Metric names in a PromQL expression (a small lexer: enough for our own queries)."""
    s = re.sub(r'"(?:\\.|[^"\\])*"', '""', expr)          # string literals
    s = re.sub(r"\$\{?\w+\}?", " ", s)                     # Grafana variables
    s = re.sub(r"\{[^}]*\}", " ", s)                       # label matchers
    s = re.sub(r"\[[^\]]*\]", " ", s)                      # ranges and subqueries
    s = re.sub(r"\b(by|without|on|ignoring|group_left|group_right)\s*\([^)]*\)", " ", s)
    s = re.sub(r"(?<![\w:])\d+(\.\d+)?([eE][+-]?\d+)?[smhdwy]*", " ", s)  # numbers
    names = set()
    for m in re.finditer(r"(?<![\w:.])[A-Za-z_:][\w:]*", s):
        if m.group(0) not in _KEYWORDS and not s[m.end():].lstrip().startswith("("):
            names.add(m.group(0))
    return names


def test_metric_name_lexer():
    assert metric_names('sum by (instance) (rate(a_total{t=~"x|y"}[5m])) / 1e6 > 0.8 '
                        'unless on (instance, job) b == 1 and time() - c offset 5m') \
        == {"a_total", "b", "c"}


def _rules():
    with open(RULES) as fh:
        return [r for g in yaml.safe_load(fh)["groups"] for r in g["rules"]]


def test_rules_use_only_exported_metrics():
    exported = exported_names()
    for rule in _rules():
        names = metric_names(rule["expr"])
        assert names, rule["alert"]
        assert names <= exported, f"{rule['alert']}: unknown {names - exported}"


def _promtool():
    path = shutil.which("promtool")
    if path is None:
        reason = "promtool is missing (Debian's prometheus package; `make promtool`)"
        if os.environ.get("CI", "").lower() not in ("", "0", "false"):
            pytest.fail(reason + ": CI must run the rule tests")
        pytest.skip(reason)
    return path


def test_promtool_checks_the_rules():
    out = subprocess.run([_promtool(), "check", "rules", RULES], capture_output=True, text=True)
    assert out.returncode == 0, out.stdout + out.stderr


def test_promtool_unit_tests_pass():
    out = subprocess.run([_promtool(), "test", "rules", *RULE_TESTS], capture_output=True,
                         text=True)
    assert out.returncode == 0, out.stdout + out.stderr


def test_every_alert_is_tested_firing_and_silent():
    firing, silent = set(), set()
    for path in RULE_TESTS:
        with open(path) as fh:
            for case in yaml.safe_load(fh)["tests"]:
                for check in case.get("alert_rule_test", []):
                    (firing if check.get("exp_alerts") else silent).add(check["alertname"])
    alerts = {r["alert"] for r in _rules()}
    assert alerts - firing == set(), "never seen firing"
    assert alerts - silent == set(), "never seen silent"


# --- Grafana dashboard --------------------------------------------------------------

DASHBOARD = os.path.join(ROOT, "monitoring", "grafana", "taler-ops.json")


def _dashboard():
    with open(DASHBOARD) as fh:
        return json.load(fh)


def test_dashboard_is_what_its_generator_writes():
    spec = importlib.util.spec_from_file_location(
        "build_dashboard", os.path.join(ROOT, "monitoring", "grafana", "build_dashboard.py"))
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    with open(DASHBOARD) as fh:
        assert fh.read() == module.render(), \
            "run python3 monitoring/grafana/build_dashboard.py and commit taler-ops.json"


def test_dashboard_is_importable():
    """What Grafana's import needs: a schema version, a uid, panels with ids and places."""
    board = _dashboard()
    assert isinstance(board["schemaVersion"], int) and board["schemaVersion"] >= 36
    assert board["uid"] and board["title"] and "id" not in board  # Grafana assigns the id
    ids = [p["id"] for p in board["panels"]]
    assert len(ids) == len(set(ids))
    variables = {v["name"] for v in board["templating"]["list"]}
    for p in board["panels"]:
        pos = p["gridPos"]
        assert pos["x"] + pos["w"] <= 24 and pos["h"] > 0, p["title"]
        if p["type"] != "row":
            assert p["datasource"]["uid"] == "${datasource}" and p["targets"], p["title"]
            for t in p["targets"]:
                assert t["refId"] and t["datasource"] == p["datasource"]
                used = set(re.findall(r"\$\{?(\w+)", t["expr"])) - {"__rate_interval"}
                assert used <= variables, (p["title"], used)


def test_dashboard_uses_only_exported_metrics():
    exported = exported_names()
    board = _dashboard()
    exprs = [t["expr"] for p in board["panels"] for t in p.get("targets", [])]
    assert len(exprs) > 20
    for expr in exprs:
        names = metric_names(expr)
        assert names and names <= exported, f"{expr}: unknown {names - exported}"
    for var in board["templating"]["list"]:
        if var["type"] == "query":
            metric = re.fullmatch(r"label_values\((\w+), *\w+\)", var["query"]["query"]).group(1)
            assert metric in exported


def test_dashboard_shows_every_exported_metric():
    """Nothing exported is left out of the picture (a new metric needs a panel)."""
    board = _dashboard()
    shown = set().union(*(metric_names(t["expr"]) for p in board["panels"]
                          for t in p.get("targets", [])))
    assert exported_names() - shown == set()


# --- the monitoring role ------------------------------------------------------------

def test_monitoring_role_installs_checked_rules_and_the_dashboard(tmp_path):
    from ansible_runner import run_tasks
    rules, boards = tmp_path / "rules", tmp_path / "dashboards"
    role = [{"ansible.builtin.include_role": {"name": "monitoring"}}]
    assert run_tasks(role).ok  # both directories empty: nothing to do
    assert not rules.exists()
    params = {"monitoring_prometheus_rules_dir": str(rules), "monitoring_promtool": _promtool(),
              "monitoring_grafana_dashboards_dir": str(boards),
              "monitoring_prometheus_service": ""}  # no Prometheus to reload here
    run = run_tasks(role, extra_vars=params)
    assert run.ok, run
    installed = rules / "taler-ops-alerts.yml"
    with open(RULES) as fh:
        assert installed.read_text() == fh.read()
    with open(DASHBOARD) as fh:
        assert (boards / "taler-ops.json").read_text() == fh.read()
    again = run_tasks(role, extra_vars=params)
    assert again.ok and not any(r.get("changed") for r in again.results), again

    # promtool refuses a broken rule file, and the installed one stays.
    broken = tmp_path / "broken.yml"
    broken.write_text("groups:\n  - name: x\n    rules:\n      - alert: X\n        expr: rate((\n")
    run = run_tasks(role, extra_vars=dict(params, monitoring_prometheus_rules_src=str(broken)))
    assert not run.ok
    with open(RULES) as fh:
        assert installed.read_text() == fh.read()


# --- documentation ------------------------------------------------------------------

DOCS = os.path.join(ROOT, "docs")


def _anchors(name):
    """GitHub's heading anchors of a markdown file (fenced code skipped)."""
    anchors, fenced = set(), False
    with open(os.path.join(DOCS, name)) as fh:
        for line in fh:
            fenced ^= line.startswith("```")
            if not fenced and line.startswith("#"):
                text = line.lstrip("#").strip().lower()
                anchors.add(re.sub(r"[^\w\- ]", "", text).replace(" ", "-"))
    return anchors


def test_every_alert_has_its_runbook_and_operations_links_resolve():
    ops = _anchors("operations.md")
    for rule in _rules():
        doc, anchor = rule["annotations"]["runbook"].split("#")
        assert doc == "docs/operations.md" and anchor in ops, rule["alert"]
    with open(os.path.join(DOCS, "operations.md")) as fh:
        links = re.findall(r"\]\(([\w.-]*\.md)?#([\w-]+)\)", fh.read())
    assert links
    for doc, anchor in links:
        assert anchor in _anchors(doc or "operations.md"), f"{doc}#{anchor}"
