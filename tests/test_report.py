"""The auditor's report (`taler-ops report`), read from a Taler-built auditor database.

Each test builds the auditor schema from Taler's own SQL files (auditor-0001/0002)
and fills it with INSERTs, as Taler's helpers or taler-ops' audit would; the report
must show exactly those findings and figures, and its HTML, JSON and text forms must
carry the same numbers.  A real headless browser (Debian's chromium) loads the HTML.
"""

import datetime
import json
import os
import re
import shutil
import subprocess
from html.parser import HTMLParser

import psycopg
import pytest

from taler_build import build_taler_auditor, require_taler_sql

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
CUR = "KUDOS"
TS = 1_767_225_600_000_000      # 2026-01-01 00:00:00Z in µs


@pytest.fixture
def sql_root():
    return require_taler_sql()


def k(n, size=32):
    return bytes([n]) * size


def amt(text):
    """'1.25' -> SQL literal of auditor.taler_amount."""
    val, _, frac = text.partition(".")
    return f"ROW({int(val)}, {int((frac + '0' * 8)[:8])})::auditor.taler_amount"


def b32(data):
    """Crockford base32 as GNUnet writes it, from the standard library's RFC 4648 base32."""
    import base64
    rfc = base64.b32encode(data).decode().rstrip("=")
    return rfc.translate(str.maketrans("ABCDEFGHIJKLMNOPQRSTUVWXYZ234567",
                                       "0123456789ABCDEFGHJKMNPQRSTVWXYZ"))


def auditor_db(cluster, name, sql_root):
    return build_taler_auditor(cluster.createdb(name), sql_root=sql_root)


# Every report table: (columns, [(suppressed, values...)]).  Values are SQL literals.
FINDINGS = {
    "auditor_bad_sig_losses": (
        "problem_row_id, operation, loss, operation_specific_pub",
        [(False, "10, 'melt', {}, %s".format(amt("1.5")), k(1)),
         (False, "11, 'deposit', {}, %s".format(amt("0.25")), k(2)),
         (True, "12, 'withdraw', {}, %s".format(amt("100")), k(3))]),
    "auditor_amount_arithmetic_inconsistency": (
        "problem_row_id, operation, exchange_amount, auditor_amount, profitable",
        [(False, f"20, 'deposit fee', {amt('2')}, {amt('1.5')}, FALSE"),
         (False, f"21, 'melt fee', {amt('3')}, {amt('1')}, TRUE"),
         (True, f"22, 'refund fee', {amt('5')}, {amt('1')}, FALSE")]),
    "auditor_coin_inconsistency": (
        "operation, exchange_amount, auditor_amount, coin_pub, profitable",
        [(False, f"'spend', {amt('4')}, {amt('1')}, %s, FALSE", k(4)),
         (True, f"'spend', {amt('9')}, {amt('1')}, %s, FALSE", k(5))]),
    "auditor_emergency": (
        "denompub_h, denom_risk, denom_loss, deposit_start, deposit_end, value",
        [(False, f"%s, {amt('10')}, {amt('2')}, {TS}, {TS + 1}, {amt('1')}", k(6, 64))]),
    "auditor_emergency_by_count": (
        "denompub_h, num_issued, num_known, risk, start, deposit_end, value",
        [(False, f"%s, 5, 7, {amt('4')}, {TS}, {TS + 1}, {amt('2')}", k(7, 64))]),
    "auditor_refreshes_hanging": (
        "problem_row_id, amount", [(False, f"30, {amt('0.5')}")]),
    "auditor_denominations_without_sigs": (
        "denompub_h, value, start_time, end_time",
        [(False, f"%s, {amt('1')}, {TS}, NULL", k(8, 64))]),
    "auditor_denomination_key_validity_withdraw_inconsistency": (
        "problem_row_id, execution_date, reserve_pub, denompub_h",
        [(False, f"40, {TS}, %s, %s", k(9), k(10, 64))]),
    "auditor_reserve_balance_insufficient_inconsistency": (
        "reserve_pub, inconsistency_gain, inconsistency_amount",
        [(False, f"%s, FALSE, {amt('0.3')}", k(11)), (False, f"%s, TRUE, {amt('0.2')}", k(12))]),
    "auditor_reserve_balance_summary_wrong_inconsistency": (
        "reserve_pub, exchange_amount, auditor_amount",
        [(False, f"%s, {amt('5')}, {amt('4')}", k(13))]),
    "auditor_reserve_not_closed_inconsistency": (
        "reserve_pub, balance, expiration_time, diagnostic",
        [(False, f"%s, {amt('7')}, {TS}, 'not closed'", k(14)),
         (False, f"%s, {amt('3')}, NULL, NULL", k(15))]),
    "auditor_purse_not_closed_inconsistencies": (
        "purse_pub, amount, expiration_date", [(False, f"%s, {amt('2')}, {TS}", k(16))]),
    "auditor_wire_out_inconsistency": (
        "destination_account, diagnostic, wire_out_serial_id, expected, claimed",
        [(False, f"'payto://iban/DE1', 'wrong amount', 50, {amt('10')}, {amt('12')}")]),
    "auditor_closure_lags": (
        "problem_row_id, amount, deadline, wtid, account",
        [(False, f"60, {amt('3')}, {TS}, %s, 'payto://iban/DE2'", k(17))]),
    "auditor_reserve_in_inconsistency": (
        "bank_row_id, amount_exchange_expected, amount_wired, reserve_pub, timestamp, account, "
        "diagnostic",
        [(False, f"70, {amt('5')}, {amt('4')}, %s, {TS}, 'acct', 'short'", k(18))]),
    "auditor_misattribution_in_inconsistency": (
        "amount, bank_row, reserve_pub", [(False, f"{amt('1')}, 80, %s", k(19))]),
    "auditor_wire_format_inconsistency": (
        "amount, wire_offset, diagnostic", [(False, f"{amt('1.5')}, 90, 'bad subject'")]),
    "auditor_fee_time_inconsistency": (
        "problem_row_id, fee_type, fee_time, diagnostic",
        [(False, f"100, 'wire', {TS}, 'no fee'")]),
    # 30 open rows: more than one page (25) in the HTML.
    "auditor_row_inconsistency": (
        "row_table, diagnostic, problem_row_id",
        [(False, f"'reserves_in', 'bad row {i}', {110 + i}") for i in range(30)]
        + [(True, "'wire_out', 'looked into', 199")]),
    "auditor_row_minor_inconsistencies": (
        "row_table, problem_row, diagnostic", [(False, "'wire', 120, 'minor'")]),
    "auditor_pending_deposits": (
        "total_amount, wire_target_h_payto, batch_deposit_serial_id, deadline",
        [(False, f"{amt('8')}, %s, 130, {TS}", k(20))]),
    "auditor_deposit_confirmations": (
        "h_contract_terms, h_policy, h_wire, exchange_timestamp, refund_deadline, wire_deadline, "
        "total_without_fee, coin_pubs, coin_sigs, merchant_pub, exchange_sig, exchange_pub, "
        "master_sig",
        [(False, f"%s, %s, %s, {TS}, {TS}, {TS}, {amt('6')}, ARRAY[%s], ARRAY[%s], %s, %s, %s, %s",
          k(21, 64), k(22, 64), k(23, 64), k(24), k(25, 64), k(26), k(27, 64), k(28), k(29, 64))]),
}

# What the report must compute from FINDINGS (open rows only).
MEASURES = {
    "auditor_bad_sig_losses.loss": "KUDOS:1.75",
    "auditor_amount_arithmetic_inconsistency.loss": "KUDOS:0.5",
    "auditor_amount_arithmetic_inconsistency.gain": "KUDOS:2",
    "auditor_coin_inconsistency.loss": "KUDOS:3",
    "auditor_coin_inconsistency.gain": "KUDOS:0",
    "auditor_emergency.loss": "KUDOS:2",
    "auditor_emergency.risk": "KUDOS:10",
    "auditor_emergency_by_count.risk": "KUDOS:4",
    "auditor_refreshes_hanging.risk": "KUDOS:0.5",
    "auditor_reserve_balance_insufficient_inconsistency.loss": "KUDOS:0.3",
    "auditor_reserve_balance_insufficient_inconsistency.gain": "KUDOS:0.2",
    "auditor_reserve_balance_summary_wrong_inconsistency.delta": "KUDOS:1",
    "auditor_reserve_not_closed_inconsistency.balance": "KUDOS:10",
    "auditor_purse_not_closed_inconsistencies.amount": "KUDOS:2",
    "auditor_wire_out_inconsistency.delta": "KUDOS:2",
    "auditor_closure_lags.amount": "KUDOS:3",
    "auditor_reserve_in_inconsistency.delta": "KUDOS:1",
    "auditor_misattribution_in_inconsistency.amount": "KUDOS:1",
    "auditor_wire_format_inconsistency.amount": "KUDOS:1.5",
    "auditor_pending_deposits.amount": "KUDOS:8",
    "auditor_deposit_confirmations.amount": "KUDOS:6",
}
# losses 1.75 + 0.5 + 3 + 2 + 0.3; risk 10 + 4 + 0.5 + outstanding denominations 20 + 5;
# at issue 2 + 0.2 + 1 + 10 + 2 + 2 + 3 + 1 + 1 + 1.5 + 8 + 6.
SUMMARY = {"open findings": 55, "suppressed findings": 4,
           "report tables with open findings": 22, "losses found": "KUDOS:7.55",
           "at risk": "KUDOS:39.5", "amounts at issue": "KUDOS:37.7",
           "losses in the auditor's balances": "KUDOS:0.1",
           "risk in the auditor's balances": "KUDOS:50",
           "fee revenue": "KUDOS:2.5"}
BALANCES = {"coins_deposit_fee_revenue": "1.2", "reserves_withdraw_fee_revenue": "0.8",
            "aggregation_total_wire_fee_revenue": "0.5", "coins_irregular_loss": "0.1",
            "coin_balance_risk": "50", "total_escrowed": "100"}
PROGRESS = {"coins_withdraw_serial_id": 101, "reserves_reserve_in_serial_id": 51,
            "aggregation_last_wire_out_serial_id": 0, "purse_open_counter": 3}


def fill(uri, after_table=None):
    """Rows in every report table (some suppressed), balances, progress, revenue."""
    ids = {}
    with psycopg.connect(uri, autocommit=True) as conn:
        for table, (columns, rows) in FINDINGS.items():
            ids[table] = {False: [], True: []}
            for suppressed, values, *params in rows:
                row_id = conn.execute(
                    f"INSERT INTO auditor.{table} ({columns}, suppressed) VALUES "
                    f"({values}, %s) RETURNING row_id", (*params, suppressed)).fetchone()[0]
                ids[table][suppressed].append(row_id)
            if after_table:
                after_table()
        for key, value in BALANCES.items():
            conn.execute(f"INSERT INTO auditor.auditor_balances (balance_key, balance_value) "
                         f"VALUES (%s, {amt(value)})", (key,))
        conn.execute("INSERT INTO auditor.auditor_balances (balance_key) VALUES "
                     "('purse_global_balance')")
        for key, value in PROGRESS.items():
            conn.execute("INSERT INTO auditor.auditor_progress VALUES (%s, %s)", (key, value))
        for n, rev, loss in ((40, "3", "0"), (41, "1.5", "0.1")):
            conn.execute("INSERT INTO auditor.auditor_historic_denomination_revenue "
                         "(denom_pub_hash, revenue_timestamp, revenue_balance, loss_balance) "
                         f"VALUES (%s, {TS}, {amt(rev)}, {amt(loss)})", (k(n, 64),))
        for n, bal, issued in ((42, "20", 12), (43, "5", 3)):
            conn.execute("INSERT INTO auditor.auditor_denomination_pending (denom_pub_hash, "
                         "denom_balance, denom_loss, num_issued, denom_risk, recoup_loss) VALUES "
                         f"(%s, {amt(bal)}, {amt('0')}, %s, {amt(bal)}, {amt('0')})",
                         (k(n, 64), issued))
        for n in (50, 51):
            conn.execute("INSERT INTO auditor.auditor_reserves (reserve_pub, reserve_balance, "
                         "reserve_loss, withdraw_fee_balance, close_fee_balance, "
                         "purse_fee_balance, open_fee_balance, history_fee_balance, "
                         f"expiration_date) VALUES (%s, {amt('4.5')}, {amt('0')}, {amt('0.1')}, "
                         f"{amt('0')}, {amt('0')}, {amt('0')}, {amt('0')}, {TS})", (k(n),))
    return ids


def fill_with_history(uri):
    """fill(), with a run history as taler-ops' audit keeps it: taler_ops.audit_runs
    (created as auditor-dbinit adds it beside Taler's schema) gets a point before any
    finding, one after each report table's rows and one after the balances, each
    recorded by the audit's own code (run_history.record).  The points are then dated
    six hours apart from 2026-01-01 and given a sync staleness, since no audit or sync
    ran: the counts and totals are the recorded ones."""
    from taler_ops.audit import history as run_history
    from taler_ops.schema import auditor_schema
    with psycopg.connect(uri) as conn:
        for stmt in auditor_schema.TALER_OPS_DDL:
            conn.execute(stmt)
        conn.commit()

        def record():
            run_history.record(conn, datetime.datetime.now(datetime.timezone.utc), 0)
            conn.commit()
        record()
        ids = fill(uri, after_table=record)
        record()
        conn.execute(
            "UPDATE taler_ops.audit_runs r SET started_tsz = t.started, "
            "ended_tsz = t.started + interval '90 seconds', "
            "sync_last_copy_tsz = t.started + interval '90 seconds' "
            "- make_interval(secs => 20 + (t.n * 37) % 240) "
            "FROM (SELECT run_id, row_number() OVER (ORDER BY run_id) AS n, "
            "'2026-01-01 00:00:00Z'::timestamptz + (row_number() OVER (ORDER BY run_id) - 1) "
            "* interval '6 hours' AS started FROM taler_ops.audit_runs) t "
            "WHERE r.run_id = t.run_id")
        conn.commit()
    return ids


def safe_copy_with_sync_state(cluster, name):
    """A database with taler_ops' sync bookkeeping: watermarks, an open hole, a halt."""
    from taler_ops.schema import bookkeeping
    uri = cluster.createdb(name)
    with psycopg.connect(uri, autocommit=True) as conn:
        with conn.transaction():
            bookkeeping.create(conn, "safe-copy", None, True)
        conn.execute("INSERT INTO taler_ops.sync_watermarks (table_name, last_serial, rows_copied, "
                     "complete_serial, updated_tsz) VALUES ('reserves_out', 140, 140, 120, "
                     "'2026-01-02 03:04:05+00'), ('reserves_in', 50, 50, 50, "
                     "'2026-01-02 03:00:00+00')")
        conn.execute("INSERT INTO taler_ops.sync_holes (table_name, lo, hi, seen_tsz) VALUES "
                     "('reserves_out', 120, 124, '2026-01-02 03:04:00+00')")
        conn.execute("INSERT INTO taler_ops.sync_holes (table_name, lo, hi, expired_tsz) VALUES "
                     "('reserves_in', 10, 12, now())")
        conn.execute("INSERT INTO taler_ops.sync_halts (table_name, serial, rule, message, "
                     "halted_tsz) VALUES ('coin_deposits', 77, 'late-row', 'row 77 arrived "
                     "below the watermark', '2026-01-02 03:05:00+00')")
        conn.execute("INSERT INTO taler_ops.sync_halts (table_name, serial, rule, message, "
                     "cleared_tsz) VALUES ('wire_out', 5, 'immutable', 'old', now())")
    return uri


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


# -- tests ------------------------------------------------------------------------------
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


# -- a real browser ---------------------------------------------------------------------
def _chromium():
    for name in ("chromium", "chromium-browser"):
        path = shutil.which(name)
        if path:
            return path
    reason = "chromium is missing (Debian's chromium package; `make chromium`)"
    if os.environ.get("CI", "").lower() not in ("", "0", "false"):
        pytest.fail(reason + ": CI must run the browser test")
    pytest.skip(reason)


def _artefacts():
    path = (os.environ.get("TALER_OPS_TEST_ARTEFACTS")
            or os.path.join(ROOT, "build", "test-artefacts"))
    os.makedirs(path, exist_ok=True)
    return path


def browse(chromium, page, tmp_path, *extra):
    """chromium --headless on a file:// page: (dumped DOM, console messages on stderr)."""
    profile = tmp_path / f"chromium-profile-{len(list(tmp_path.iterdir()))}"
    done = subprocess.run(
        [chromium, "--headless", "--disable-gpu", "--no-sandbox", "--no-first-run",
         "--disable-extensions", "--disable-background-networking", "--disable-sync",
         f"--user-data-dir={profile}", "--enable-logging=stderr", "--v=0",
         "--window-size=1280,2400", *extra, f"file://{page}"],
        capture_output=True, text=True, timeout=180, cwd=tmp_path)
    assert done.returncode == 0, done.stderr[-3000:]
    # Chromium logs page console messages as "...:INFO:CONSOLE:<line>] \"text\", source: ..."
    console = [ln for ln in done.stderr.splitlines() if ":CONSOLE" in ln or "Uncaught" in ln]
    return done.stdout, console


def test_a_headless_browser_loads_the_report_without_console_errors(cluster, conf, cli, sql_root,
                                                                    tmp_path):
    chromium = _chromium()
    # The console check can fail: a page that logs an error and throws is caught.
    broken = tmp_path / "broken.html"
    broken.write_text("<!DOCTYPE html><html><body><script>console.error('boom');"
                      "undefinedFunction();</script></body></html>")
    _, console = browse(chromium, broken, tmp_path, "--dump-dom")
    assert any("boom" in ln for ln in console) and any("undefinedFunction" in ln for ln in console)

    uri = auditor_db(cluster, "report_browser", sql_root)
    fill_with_history(uri)
    safe = safe_copy_with_sync_state(cluster, "report_browser_safe")
    page = tmp_path / "report.html"
    assert cli("report", "-c", config(conf, uri, safe), "-o", page).returncode == 0
    dom, console = browse(chromium, page, tmp_path, "--dump-dom")
    assert console == [], console
    # the charts over time are drawn (inline SVG, no script needed)
    assert dom.count('class="chart timechart"') == 3
    assert 'data-report-ready="1"' in dom           # the inline script ran to its end
    # 30 open row inconsistencies: paged, 25 shown, 5 paged out, and a pager.
    assert 'class="pager"' in dom and "page 1 of 2 (30 rows)" in dom
    assert dom.count('class="paged-out"') == 5
    artefacts = _artefacts()
    shot = os.path.join(artefacts, "report.png")
    if os.path.exists(shot):
        os.remove(shot)
    _, console = browse(chromium, page, tmp_path, f"--screenshot={shot}")
    assert console == [], console
    with open(shot, "rb") as fh:
        assert fh.read(8) == b"\x89PNG\r\n\x1a\n"
    # Printable: the browser's own print to PDF (the print CSS shows every paged row).
    pdf = os.path.join(artefacts, "report.pdf")
    if os.path.exists(pdf):
        os.remove(pdf)
    _, console = browse(chromium, page, tmp_path, "--no-pdf-header-footer", f"--print-to-pdf={pdf}")
    assert console == [], console
    with open(pdf, "rb") as fh:
        assert fh.read(5) == b"%PDF-"
    shutil.copy(page, os.path.join(artefacts, "report.html"))
    print(f"\nbrowser test artefacts (screenshot, PDF, report): {artefacts}")


# -- playbooks/report.yml ---------------------------------------------------------------
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


def test_an_auditor_database_built_by_taler_ops_dbinit_is_reported(fresh_db, conf, cli):
    """The model's auditor schema is Taler's: every report table is readable."""
    cfg = config(conf, fresh_db)
    assert cli("auditor-dbinit", "-c", cfg).returncode == 0
    model = json.loads(report(cli, cfg, "--format", "json"))
    assert model["summary"]["findings_open"] == 0
    assert model["summary"]["unreadable_tables"] == []
    assert sorted(s["table"] for s in model["sections"]) == sorted(FINDINGS)


GEN_NOW = 1_760_000_000_000_000


def test_generated_misbehaviour_audited_then_reported(cluster, conf, cli, tmp_path):
    """gen --inject (economic and forged-signature kinds) -> audit -> report: the report
    shows, table by table, exactly the findings the audit stored."""
    from taler_ops.sim import inject
    ex, aud = cluster.createdb("report_e2e_ex"), cluster.createdb("report_e2e_aud")
    master = cli("gen", "--show-master-key", "--seed", 11).stdout.strip()
    sections = {"exchange": {"CURRENCY": CUR, "MASTER_PUBLIC_KEY": master,
                             "BASE_URL": "https://exchange.demo.taler.net/"},
                "exchangedb-postgres": {"CONFIG": ex}, "auditordb-postgres": {"CONFIG": aud}}
    cfg = conf("e2e.conf", sections)
    for step in (("exchange-dbinit",), ("auditor-dbinit",)):
        done = cli(*step, "-c", cfg)
        assert done.returncode == 0, done.stderr
    kinds = ",".join(list(inject.KINDS)[:3] + ["bad_sig_deposit", "bad_sig_withdraw"])
    done = cli("gen", "-c", cfg, "--rows", 3000, "--seed", 11, "--now", GEN_NOW,
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
    master = cli("gen", "--show-master-key", "--seed", 11).stdout.strip()
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
        args = ["gen", "-c", cfg, "--rows", 1200, "--seed", seed, "--master-seed", 11,
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
