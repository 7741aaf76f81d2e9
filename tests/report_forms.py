"""The report's three forms (taler-ops report: JSON, text, HTML) produced through the CLI and
read back, and the check that they carry the same numbers (tests/test_report*.py)."""

import json
import re
from html.parser import HTMLParser

from report_data import CUR


def config(conf, auditor_uri, exchange_uri=None, name="report.conf"):
    sections = {"exchange": {"CURRENCY": CUR, "BASE_URL": "https://exchange.example.org/"},
                "auditordb-postgres": {"CONFIG": auditor_uri}}
    if exchange_uri:
        sections["exchangedb-postgres"] = {"CONFIG": exchange_uri}
    return conf(name, sections)


# -- reading the three forms back --------------------------------------------------------
class _HtmlFacts(HTMLParser):
    """The figures the HTML shows, by their data-* attributes."""

    def __init__(self):
        super().__init__()
        self.attrs = {}          # attribute -> {key: text}
        self.rows = {}           # (table, kind) -> [row_id]
        self.scripts = []
        self._open = []          # (attr, key) collecting text
        self._table = None
        self._in_script = False

    def handle_starttag(self, tag, attrs):
        a = dict(attrs)
        if tag == "table" and "data-kind" in a:
            self._table = (a["data-table"], a["data-kind"])
            self.rows.setdefault(self._table, [])
        if tag == "tr" and "data-row-id" in a and self._table:
            self.rows[self._table].append(int(a["data-row-id"]))
        if tag == "script":
            self._in_script = True
            self.scripts.append(a)
        for name in ("data-fig", "data-measure", "data-balance", "data-count", "data-fact",
                     "data-amount", "data-progress"):
            if name in a:
                self._open.append([name, a[name], []])

    def handle_endtag(self, tag):
        if tag == "table":
            self._table = None
        if tag == "script":
            self._in_script = False
        if tag in ("td", "span", "tr") and self._open:
            name, key, text = self._open.pop()
            self.attrs.setdefault(name, {})[key] = " ".join("".join(text).split())

    def handle_data(self, data):
        for entry in self._open:
            entry[2].append(data)


def html_facts(text):
    p = _HtmlFacts()
    p.feed(text)
    return p


def text_blocks(text):
    """Section blocks of the text form: {table: [lines]}."""
    blocks, current = {}, None
    for line in text.splitlines():
        m = re.match(r"^.+ \(auditor\.(\w+)\): (\d+) open, (\d+) suppressed$", line)
        if m:
            current = m.group(1)
            blocks[current] = [line]
        elif line and not line.startswith(" "):
            current = None
        elif current:
            blocks[current].append(line)
    return blocks


def report(cli, cfg, *args):
    done = cli("report", "-c", cfg, *args)
    assert done.returncode == 0, done.stderr
    return done.stdout


def three_forms(cli, cfg, tmp_path):
    model = json.loads(report(cli, cfg, "--format", "json"))
    text = report(cli, cfg, "--format", "text")
    out = tmp_path / "report.html"
    done = cli("report", "-c", cfg, "-o", out)
    assert done.returncode == 0, done.stderr
    assert str(out) in done.stderr
    return model, text, out.read_text()


def assert_forms_agree(model, text, html_text):
    facts = html_facts(html_text)
    s = model["summary"]
    figures = {"open findings": s["findings_open"], "suppressed findings": s["findings_suppressed"],
               "report tables with open findings": s["tables_with_findings"],
               "losses found": s["loss_total"], "at risk": s["risk_total"],
               "amounts at issue": s["at_issue_total"],
               "losses in the auditor's balances": s["balance_losses"],
               "risk in the auditor's balances": s["balance_risk"], "fee revenue": s["fee_revenue"]}
    assert facts.attrs["data-fig"] == {k: str(v) for k, v in figures.items()}
    for label, value in figures.items():
        assert re.search(rf"^  {re.escape(label)} +{re.escape(str(value))}$", text, re.M), label
    blocks = text_blocks(text)
    for sec in model["sections"]:
        t = sec["table"]
        assert facts.attrs["data-count"][f"{t}:open"] == str(sec["open"])
        assert facts.attrs["data-count"][f"{t}:suppressed"] == str(sec["suppressed"])
        assert blocks[t][0].endswith(f"{sec['open']} open, {sec['suppressed']} suppressed")
        assert facts.rows.get((t, "open"), []) == [r["row_id"] for r in sec["rows"]]
        assert facts.rows.get((t, "suppressed"), []) == [r["row_id"]
                                                         for r in sec["suppressed_rows"]]
        for m in sec["measures"]:
            assert facts.attrs["data-measure"][f"{t}.{m['name']}"] == m["amount"]
            assert f"  total {m['label']} [{m['category']}]: {m['amount']}" in blocks[t]
        amounts = [c["name"] for c in sec["columns"] if c["kind"] in ("amount", "int", "text")]
        for row in sec["rows"] + sec["suppressed_rows"]:
            line = [ln for ln in blocks[t] if re.match(rf"^ +{row['row_id']}  ", ln)]
            assert len(line) == 1, (t, row)
            for name in amounts:
                if row[name] is not None:
                    assert str(row[name]) in line[0], (t, name, row)
    for b in model["balances"]:
        assert facts.attrs["data-balance"][b["key"]] == (b["value"] or "-")
        value = re.escape(b["value"] or "-")
        assert re.search(rf"^  {re.escape(b['key'])} .* {value}$", text, re.M)
