"""The audit (taler-ops audit): rules of docs/economics.md on hand-made histories,
incremental progress, crash consistency, -i, the CLI, the Ansible module and playbook."""

import datetime
import json
import os
import signal
import subprocess
import sys
import time

import psycopg
import pytest

from audit_history import DAY, T0, YEAR, History
from conftest import FLAVOURS, flavour_param
from taler_build import build_taler_auditor, build_taler_exchange, require_taler_sql
from taler_ops import audit
from taler_ops.schema import dbinit
from taler_ops.audit.common import KINDS

NOW = T0 + 10 * DAY


def make_auditor_db(uri, flavour):
    """An auditor database of ``flavour``: the model, or built from Taler's own files
    (psql, as taler-auditor-dbinit) and then given taler-ops' audit state by auditor-dbinit."""
    if flavour == "taler":
        root = require_taler_sql()
        build_taler_auditor(uri, sql_root=root)
        dbinit.auditor_dbinit(uri, sql_dir=os.path.join(root, "auditor"))
    else:
        dbinit.auditor_dbinit(uri)
    return uri


@pytest.fixture(params=[flavour_param(f) for f in FLAVOURS])
def auditor_flavour(request):
    return request.param


@pytest.fixture
def dbs(cluster, request, auditor_flavour):
    """(exchange uri, auditor uri): a primary exchange database and a separate auditor
    one, of either flavour (the audit must give the same results on both)."""
    base = "".join(ch if ch.isalnum() else "_" for ch in request.node.name[:30].lower())
    ex = cluster.createdb(f"ax_{base}_{os.getpid()}_{time.monotonic_ns() % 10**6}")
    au = cluster.createdb(f"aa_{base}_{os.getpid()}_{time.monotonic_ns() % 10**6}")
    dbinit.exchange_dbinit(ex)
    make_auditor_db(au, auditor_flavour)
    return ex, au


@pytest.fixture
def hist(dbs):
    h = History(dbs[0])
    yield h
    h.close_conn()


def run(dbs, **kw):
    kw.setdefault("now_us", NOW)
    kw.setdefault("currency", "KUDOS")
    return audit.run(dbs[0], dbs[1], **kw)


def found(report, kind=None):
    return sorted((f["kind"], f["table"], f["serial"]) for f in report["findings"]
                  if kind is None or f["kind"] == kind)


def q(uri, query, params=None):
    with psycopg.connect(uri, autocommit=True) as conn:
        cur = conn.execute(query, params)
        return cur.fetchall() if cur.description else None


def progress(uri):
    return dict(q(uri, "SELECT progress_key, progress_offset FROM auditor.auditor_progress"))


def _table_col(k):
    if k.row_table is None:
        return "NULL::text"
    return f"'{k.row_table[1:]}'" if k.row_table.startswith("=") else k.row_table


def all_findings(uri):
    """Every stored finding as (kind, table, serial), sorted, duplicates kept; table and
    serial are None where Taler's report table has no column for them."""
    out = []
    for kind, k in KINDS.items():
        out += [(kind, t, s) for t, s in q(
            uri, f"SELECT {_table_col(k)}, {k.serial or 'NULL::int8'} FROM auditor.{k.table} "
                 f"WHERE {k.where}")]
    return sorted(out, key=repr)


def stored(findings):
    """(kind, table, serial) of a run's report as Taler's report tables keep them."""
    out = []
    for kind, table, serial in findings:
        k = KINDS[kind]
        out.append((kind, None if k.row_table is None else table,
                    serial if k.serial else None))
    return sorted(out, key=repr)


def clean_history(h):
    """A small history that keeps every rule: no finding expected."""
    d = h.denomination(coin="1", fee_withdraw="0.01", fee_deposit="0.02", fee_refresh="0.03",
                       fee_refund="0.04")
    h.wire_fee("0.1", closing_fee="0.1")
    pub, uuid, _ = h.reserve("3.5")
    h.withdraw(uuid, d, "1.01")
    h.withdraw(uuid, d, "1.01")
    h.close(pub, "1.38", closing_fee="0.1")            # 3.5 - 2.02 = 1.48 = 1.38 + 0.1
    c1, c2 = h.coin(d), h.coin(d)
    b1, _ = h.deposit(c1, "0.6")
    h.refund(c1, b1, "0.1")
    b2, _ = h.deposit(c1, "0.5")                      # 0.6 - 0.1 + 0.5 = 1.0: exactly the value
    h.melt(c2, "1")
    h.wire_out([b1], "0.38")                          # 0.6 - 0.02 - 0.1 refund - 0.1 fee
    h.wire_out([b2], "0.38")                          # 0.5 - 0.02 - 0.1 fee
    return d


# -- the rules -------------------------------------------------------------------------------

def test_clean_history_has_no_findings_and_balances_add_up(dbs, hist, auditor_flavour):
    clean_history(hist)
    report = run(dbs)
    assert report["findings"] == [], report["findings"]
    assert report["auditor_flavour"] == auditor_flavour
    b = report["balances"]
    assert b["reserves_withdraw_fee_revenue"] == "KUDOS:0.02"
    assert b["reserves_close_fee_revenue"] == "KUDOS:0.1"
    assert b["reserves_reserve_total_balance"] == "KUDOS:0"
    assert b["coin_deposit_fee_revenue"] == "KUDOS:0.04"
    assert b["coin_melt_fee_revenue"] == "KUDOS:0.03"
    assert b["coin_refund_fee_revenue"] == "KUDOS:0.04"
    # two coins issued (2), spent 0.6 + 0.5 + 1 - refunded 0.1 = 2.0
    assert b["total_escrowed"] == "KUDOS:0"
    assert b["aggregation_total_wire_out"] == "KUDOS:0.76"
    assert b["aggregation_total_wire_fee_revenue"] == "KUDOS:0.2"
    assert report["rows_examined"] > 10 and report["progress_moved"]


def test_overdraft_names_the_withdrawal_and_books_the_loss(dbs, hist):
    d = hist.denomination(coin="1", fee_withdraw="0.01")
    pub, uuid, _ = hist.reserve("2.02")
    hist.withdraw(uuid, d, "1.01")
    hist.withdraw(uuid, d, "1.01")
    over = hist.withdraw(uuid, d, "1.01")
    report = run(dbs)
    assert found(report) == [("reserve_balance_insufficient", "reserves_out", over)]
    f = report["findings"][0]
    assert f["reserve_pub"] == pub.hex() and f["inconsistency_amount"] == "KUDOS:1.01"
    assert report["balances"]["reserves_reserve_loss"] == "KUDOS:1.01"
    row = q(dbs[1], "SELECT (reserve_balance).val, (reserve_balance).frac, (reserve_loss).val, "
                    "(reserve_loss).frac FROM auditor.auditor_reserves WHERE reserve_pub = %s",
            (pub,))
    assert row == [(0, 0, 1, 1_000_000)]


def test_withdraw_amount_must_be_value_plus_fee(dbs, hist):
    d = hist.denomination(coin="1", fee_withdraw="0.01")
    _, uuid, _ = hist.reserve("5")
    bad = hist.withdraw(uuid, d, "1.00")
    report = run(dbs)
    assert found(report) == [("amount_arithmetic_inconsistency", "reserves_out", bad)]
    assert report["findings"][0]["auditor_amount"] == "KUDOS:1.01"


def test_expired_reserve_not_closed_reported_once(dbs, hist):
    hist.wire_fee("0.1", closing_fee="0.1")
    _, _, _ = hist.reserve("1", expiration=NOW - DAY)             # expired, within the grace
    pub2, uuid2, _ = hist.reserve("1", expiration=NOW - DAY - 1)  # expired beyond it
    pub3, _, _ = hist.reserve("1", expiration=NOW - 2 * DAY)      # expired, closed
    hist.close(pub3, "0.9", closing_fee="0.1")
    report = run(dbs)
    assert found(report) == [("reserve_not_closed", "reserves", uuid2)]
    assert report["findings"][0]["balance"] == "KUDOS:1"
    assert run(dbs)["findings"] == [], "reported once per reserve"
    later = run(dbs, now_us=NOW + 1)                   # the first one is past the grace too
    assert len(found(later, "reserve_not_closed")) == 1


# -- Taler's semantics at the edges (issue #17) ---------------------------------------------

@pytest.fixture(params=[flavour_param(f) for f in FLAVOURS])
def xdbs(cluster, request):
    """(exchange uri, auditor uri) with both databases of one flavour: the model's, or
    built from Taler's own SQL files (exchange and auditor)."""
    tag = f"{os.getpid()}_{time.monotonic_ns() % 10**6}"
    ex, au = cluster.createdb(f"xe_{tag}"), cluster.createdb(f"xa_{tag}")
    if request.param == "taler":
        build_taler_exchange(ex, sql_root=require_taler_sql())
    dbinit.exchange_dbinit(ex)
    make_auditor_db(au, request.param)
    return ex, au


@pytest.fixture
def xhist(xdbs):
    h = History(xdbs[0])
    yield h
    h.close_conn()


def test_withdraw_at_exactly_expire_withdraw_is_valid(xdbs, xhist):
    """Taler's helper checks valid_from <= execution_date <= expire_withdraw."""
    end = T0 + DAY
    d = xhist.denomination(coin="1", valid_from=T0 - DAY, expire_withdraw=end)
    _, uuid, _ = xhist.reserve("10")
    xhist.withdraw(uuid, d, "1.01", when=T0 - DAY)           # the first valid instant
    xhist.withdraw(uuid, d, "1.01", when=end)                # the last valid instant
    early = xhist.withdraw(uuid, d, "1.01", when=T0 - DAY - 1)
    late = xhist.withdraw(uuid, d, "1.01", when=end + 1)
    report = run(xdbs)
    assert found(report) == sorted([("denomination_key_validity_withdraw", "reserves_out", early),
                                    ("denomination_key_validity_withdraw", "reserves_out", late)])
    assert all_findings(xdbs[1]) == stored(found(report))


def test_reserve_not_closed_grace_threshold_and_extended_expiration(xdbs, xhist):
    """Taler: not closed only when expired by more than one day and the balance exceeds
    the closing fee; the expiration follows later transfers (idle interval)."""
    h = xhist
    h.wire_fee("0.1", closing_fee="0.5")
    _, _, _ = h.reserve("0.5", expiration=NOW - 5 * DAY)        # balance = closing fee: no
    _, uuid_grace, _ = h.reserve("0.6", expiration=NOW - DAY)   # within the grace: no
    pub_over, uuid_over, _ = h.reserve("0.6", expiration=NOW - DAY - 1)
    # Created at T0 with 4 days of idle time; a recoup into it at T0 + 8 days moves the
    # expiration to T0 + 12 days on the exchange, while the safe copy keeps T0 + 4 days.
    revoked = h.denomination(coin="1")
    h.revoke(revoked)
    pub_ext, uuid_ext, _ = h.reserve("3", expiration=T0 + 4 * DAY)
    out = h.withdraw(uuid_ext, revoked, "1.01")
    h.recoup(h.coin(revoked), out, "1", when=T0 + 8 * DAY)
    # Its origin is an iban account, for which no closing fee exists.
    iban = h.account("payto://iban/DE89370400440532013000?receiver-name=X")
    pub_nofee, uuid_nofee, _ = h.reserve(None, expiration=NOW - 3 * DAY)
    h.credit(pub_nofee, "1", source=iban)
    report = run(xdbs)
    assert found(report) == sorted([("reserve_not_closed", "reserves", uuid_over),
                                    ("reserve_not_closed", "reserves", uuid_nofee)])
    by_uuid = {f["serial"]: f for f in report["findings"]}
    assert by_uuid[uuid_over]["diagnostic"] == "payto://x-taler-bank/ex/merchant"
    assert by_uuid[uuid_nofee]["diagnostic"] == "could not determine closing fee"
    assert q(xdbs[1], "SELECT expiration_date FROM auditor.auditor_reserves "
                      "WHERE reserve_pub = %s", (pub_ext,)) == [(T0 + 12 * DAY,)]
    # Extended reserve exactly at the grace; the other one now past it.
    assert found(run(xdbs, now_us=T0 + 13 * DAY)) == [
        ("reserve_not_closed", "reserves", uuid_grace)]
    later = run(xdbs, now_us=T0 + 13 * DAY + 1)
    assert found(later) == [("reserve_not_closed", "reserves", uuid_ext)]
    assert later["findings"][0]["expiration_time"] == T0 + 12 * DAY
    assert later["findings"][0]["balance"] == "KUDOS:2.99"


def test_reserve_close_target_account_and_closing_fee(xdbs, xhist):
    """Taler: a close pays the origin account (or the close request's account) and
    charges the closing fee of that account's wire method at the close time."""
    h = xhist
    h.wire_fee("0.1", closing_fee="0.1")
    other = h.account("payto://x-taler-bank/ex/someone-else")
    ok, _, _ = h.reserve("1")
    h.close(ok, "0.9", closing_fee="0.1")
    small, _, _ = h.reserve("0.05")
    h.close(small, "0", closing_fee="0.05")       # the whole balance below the fee: fine
    stolen, _, _ = h.reserve("1")
    wrong_target = h.close(stolen, "0.9", closing_fee="0.1", target=other)
    greedy, _, _ = h.reserve("1")
    wrong_fee = h.close(greedy, "0.8", closing_fee="0.2")
    asked, _, _ = h.reserve("1")
    req = h.insert("close_requests", reserve_pub=asked, close_timestamp=T0,
                   payto_uri="payto://x-taler-bank/ex/someone-else", close="0.9",
                   close_fee="0.1")
    h.close(asked, "0.9", closing_fee="0.1", target=other, request_row=req)
    unknown, _, _ = h.reserve("1")
    no_request = h.close(unknown, "0.9", closing_fee="0.1", request_row=999_999)
    late, _, _ = h.reserve("1")
    when = T0 + 2 * YEAR                            # no wire fee covers it
    h.close(late, "0.9", closing_fee="0.1", when=when)
    report = run(xdbs)
    assert found(report) == sorted([
        ("amount_arithmetic_inconsistency", "reserves_close", wrong_fee),
        ("row_inconsistency", "closing-fee", when),
        ("row_inconsistency", "reserves_close", no_request),
        ("row_inconsistency", "reserves_close", wrong_target)])
    diag = {f["serial"]: f.get("diagnostic") for f in report["findings"]}
    assert diag[wrong_target] == "target account does not match origin account"
    assert diag[no_request] == "reserve close request unknown"
    assert q(xdbs[1], "SELECT operation, problem_row_id, (exchange_amount).frac, "
                      "(auditor_amount).frac, profitable "
                      "FROM auditor.auditor_amount_arithmetic_inconsistency") == [
        ("closing aggregation fee", wrong_fee, 20_000_000, 10_000_000, True)]
    assert all_findings(xdbs[1]) == stored(found(report))


# Where the purses check's findings point (purse decisions and requests).
PURSES_CHECK_TABLES = ("purse_decision", "purse_requests")


def test_merged_purse_credits_only_once_decided_and_purse_fee_is_charged(xdbs, xhist):
    """Taler's reserves helper: a merge credits the reserve only through the purse
    decision (merged, not refunded); an account merge in purse-fee mode charges the
    purse fee."""
    h = xhist
    d = h.denomination(coin="1", fee_withdraw="0.01")
    paid, paid_uuid, _ = h.reserve(None)
    h.merge(h.purse("2"), paid)
    h.withdraw(paid_uuid, d, "1.01")
    undecided, undecided_uuid, _ = h.reserve(None)
    h.merge(h.purse("2"), undecided, decided=False)
    over = h.withdraw(undecided_uuid, d, "1.01")
    with_fee, with_fee_uuid, _ = h.reserve(None)
    h.merge(h.purse("1.11", purse_fee="0.1", flags=2), with_fee, when=T0 - DAY)
    h.withdraw(with_fee_uuid, d, "1.01")                 # 1.11 - 0.1 fee = 1.01: exactly
    refunded, _, _ = h.reserve(None)
    h.merge(h.purse("5"), refunded, refunded=True)
    report = run(xdbs)
    # (the purses nobody paid into are the purses check's: test_audit_aggregation_checks)
    assert [(f["kind"], f["table"], f["serial"], f["inconsistency_amount"])
            for f in report["findings"] if f["table"] not in PURSES_CHECK_TABLES] == [
        ("reserve_balance_insufficient", "reserves_out", over, "KUDOS:1.01")]
    assert report["balances"]["reserves_purse_fee_revenue"] == "KUDOS:0.1"
    balances = dict(q(xdbs[1], "SELECT reserve_pub, (reserve_balance).val * 100000000 + "
                               "(reserve_balance).frac FROM auditor.auditor_reserves"))
    assert balances[paid] == 99_000_000 and balances[with_fee] == 0
    assert balances.get(refunded, 0) == 0
    assert q(xdbs[1], "SELECT (purse_fee_balance).frac FROM auditor.auditor_reserves "
                      "WHERE reserve_pub = %s", (with_fee,)) == [(10_000_000,)]
    assert progress(xdbs[1])["reserves_purse_decisions_serial_id"] > 0


def test_recoup_only_of_revoked_denominations(xdbs, xhist):
    """Taler: a recoup (to a reserve or to the old coin) of a denomination without a
    denomination_revocations row is a row inconsistency, its amount a loss."""
    h = xhist
    revoked = h.denomination(coin="1")
    live = h.denomination(coin="1")
    h.revoke(revoked)
    pub, uuid, _ = h.reserve("10")
    out_ok = h.withdraw(uuid, revoked, "1.01")
    out_bad = h.withdraw(uuid, live, "1.01")
    h.withdraw(uuid, live, "1.01")                      # the issue of `old` below
    h.recoup(h.coin(revoked), out_ok, "1")
    bad = h.recoup(h.coin(live), out_bad, "1")
    # recoup-refresh: a fresh coin of a melt paid back into the old coin
    old = h.coin(live)
    old_id = q(xdbs[0], "SELECT known_coin_id FROM exchange.known_coins WHERE coin_pub = %s",
               (old,))[0][0]
    melt = h.melt(old, "1")
    rr = {}
    for name, denom in (("ok", revoked), ("bad", live)):
        rrc = h.insert("refresh_revealed_coins", melt_serial_id=melt, freshcoin_index=len(rr),
                       denominations_serial=denom)
        rr[name] = h.insert("recoup_refresh", coin_pub=h.coin(denom), known_coin_id=old_id,
                            coin_sig=os.urandom(64), coin_blind=os.urandom(32), amount="0.4",
                            recoup_timestamp=T0 + DAY, rrc_serial=rrc)
    report = run(xdbs)
    # The reserves helper reports the recoup row; the coins helper records each recoup
    # of a never-revoked denomination in auditor_bad_sig_losses.
    assert found(report) == sorted([("bad_sig_loss", "recoup", bad),
                                    ("bad_sig_loss", "recoup-refresh", rr["bad"]),
                                    ("row_inconsistency", "recoup", bad)])
    assert [f["diagnostic"] for f in report["findings"] if "diagnostic" in f] == [
        "denomination key not in revocation set"]
    assert report["balances"]["reserves_reserve_loss"] == "KUDOS:1"
    assert report["balances"]["coin_irregular_loss"] == "KUDOS:1.4"
    assert all_findings(xdbs[1]) == stored(found(report))


def test_purse_refund_gives_the_deposit_back_to_the_coin(xdbs, xhist):
    """Taler's coins helper (purse_refund_cb): a purse decided as refunded credits each
    deposited coin with its amount_with_fee; a merged purse does not."""
    h = xhist
    d = h.denomination(coin="1")
    refunded_coin, merged_coin = h.coin(d), h.coin(d)
    expired = h.purse("1")
    h.insert("purse_deposits", purse_pub=expired, coin_pub=refunded_coin, amount_with_fee="1",
             coin_sig=os.urandom(64))
    h.insert("purse_decision", purse_pub=expired, action_timestamp=T0 + DAY, refunded=True)
    merged = h.purse("1")
    h.insert("purse_deposits", purse_pub=merged, coin_pub=merged_coin, amount_with_fee="1",
             coin_sig=os.urandom(64))
    reserve, _, _ = h.reserve(None)
    h.merge(merged, reserve)
    h.deposit(refunded_coin, "1")                     # the refunded value spent again: fine
    _, over = h.deposit(merged_coin, "0.5")           # the merged coin has nothing left
    report = run(xdbs)
    assert [f for f in found(report) if f[1] not in PURSES_CHECK_TABLES] == [
        ("coin_overspent", "coin_deposits", over)]
    assert progress(xdbs[1])["coins_purse_refunds_serial_id"] > 0


def test_suppressed_findings_are_neither_open_nor_reported_again(dbs, hist):
    """Taler's auditor service sets ``suppressed``; the audit honours it."""
    pub, uuid, _ = hist.reserve("3", expiration=NOW - 2 * DAY, current_balance="2")
    first = run(dbs, internal=True)
    assert sorted(first["open_findings_by_kind"].items()) == [
        ("reserve_balance_summary_wrong", 1), ("reserve_not_closed", 1)]
    q(dbs[1], "UPDATE auditor.auditor_reserve_not_closed_inconsistency SET suppressed = TRUE")
    q(dbs[1], "UPDATE auditor.auditor_reserve_balance_summary_wrong_inconsistency "
              "SET suppressed = TRUE")
    again = run(dbs, internal=True, now_us=NOW + DAY)
    assert again["findings"] == [] and again["open_findings_by_kind"] == {}
    from taler_ops.monitor import status
    counts = status.audit(dbs[1])["findings"]
    assert counts["auditor_reserve_not_closed_inconsistency"] == 0
    assert counts["auditor_reserve_balance_summary_wrong_inconsistency"] == 0


def test_restart_clears_the_audit_and_the_rerun_finds_the_same(dbs, hist, auditor_flavour):
    """auditor-dbinit -r: what Taler's restart.sql clears, and taler_ops.audit_coins."""
    from taler_ops.schema import auditor_schema
    d = hist.denomination(coin="1")
    _, uuid, _ = hist.reserve("1")
    hist.withdraw(uuid, d, "1.01")
    coin = hist.coin(d)
    hist.deposit(coin, "0.6")
    hist.deposit(coin, "0.6")
    first = run(dbs)
    # overspent coin, and its denomination's only coin: an emergency by value too
    assert len(first["findings"]) == 3
    assert q(dbs[1], "SELECT count(*) FROM taler_ops.audit_coins") == [(1,)]
    assert q(dbs[1], "SELECT findings_open FROM taler_ops.audit_runs") == [(3,)]
    sql_dir = (os.path.join(require_taler_sql(), "auditor") if auditor_flavour == "taler"
               else None)
    assert dbinit.auditor_dbinit(dbs[1], restart=True, sql_dir=sql_dir)["restarted"]
    for table in auditor_schema.RESTART_CLEARS:
        assert q(dbs[1], f"SELECT count(*) FROM auditor.{table}") == [(0,)], table
    assert q(dbs[1], "SELECT count(*) FROM taler_ops.audit_coins") == [(0,)]
    # the run history counted findings the restart deleted: it starts again too
    assert q(dbs[1], "SELECT count(*) FROM taler_ops.audit_runs") == [(0,)]
    again = run(dbs)
    assert again["findings"] == first["findings"]
    assert again["balances"] == first["balances"]


def test_coin_rules_overspend_revoked_validity(dbs, hist):
    d = hist.denomination(coin="1")
    old = hist.denomination(coin="1", valid_from=T0 - 2 * YEAR, expire_withdraw=T0 - YEAR)
    _, uuid, _ = hist.reserve("10")
    hist.withdraw(uuid, d, "1.01")
    late = hist.withdraw(uuid, old, "1.01")
    coin = hist.coin(d)
    hist.melt(coin, "0.7")
    _, over = hist.deposit(coin, "0.5")                       # 1.2 > 1: names the deposit
    revoked_coin = hist.coin(old)
    hist.revoke(old)
    _, spend = hist.deposit(revoked_coin, "0.5")
    report = run(dbs)
    assert found(report) == sorted([
        ("coin_overspent", "coin_deposits", over),
        ("denomination_key_validity_withdraw", "reserves_out", late),
        ("emergency", "denominations", d),           # d issued 1, paid out 1.2
        ("revoked_denomination_spend", "coin_deposits", spend)])
    spent = next(f for f in report["findings"] if f["kind"] == "coin_overspent")
    assert spent["exchange_amount"] == "KUDOS:1.2" and spent["auditor_amount"] == "KUDOS:1"
    assert report["balances"]["coin_irregular_loss"] == "KUDOS:0.2"
    # Taler's report tables, as Taler's helpers fill them.
    assert q(dbs[1], "SELECT operation, (exchange_amount).val, (exchange_amount).frac, "
                     "(auditor_amount).val, coin_pub, profitable "
                     "FROM auditor.auditor_coin_inconsistency") == [
        ("deposit", 1, 20_000_000, 1, coin, False)]
    assert q(dbs[1], "SELECT row_table, problem_row_id FROM auditor.auditor_row_inconsistency "
                     "WHERE diagnostic LIKE 'coin of a revoked denomination spent%'") == [
        ("coin_deposits", spend)]
    assert q(dbs[1], "SELECT problem_row_id, denompub_h FROM "
                     "auditor.auditor_denomination_key_validity_withdraw_inconsistency") == [
        (late, q(dbs[0], "SELECT denom_pub_hash FROM exchange.denominations "
                         "WHERE denominations_serial = %s", (old,))[0][0])]
    # Per denomination, as Taler's helper: one coin of d withdrawn (1); the melt (0.7)
    # leaves 0.3 outstanding, which cannot cover the deposit (0.5): its amount is the
    # denomination's loss (an emergency), the balance stays.
    h_d = q(dbs[0], "SELECT denom_pub_hash FROM exchange.denominations "
                    "WHERE denominations_serial = %s", (d,))[0][0]
    assert q(dbs[1], "SELECT num_issued, (denom_risk).val, (denom_balance).val, "
                     "(denom_balance).frac, (denom_loss).frac "
                     "FROM auditor.auditor_denomination_pending "
                     "WHERE denom_pub_hash = %s", (h_d,)) == [(1, 1, 0, 30_000_000, 50_000_000)]


def test_refund_gives_value_back_to_the_coin(dbs, hist):
    d = hist.denomination(coin="1")
    coin = hist.coin(d)
    b, _ = hist.deposit(coin, "1")
    run(dbs)
    hist.refund(coin, b, "0.5")
    hist.deposit(coin, "0.5")
    assert run(dbs)["findings"] == []
    _, over = hist.deposit(coin, "0.01")
    assert found(run(dbs)) == [("coin_overspent", "coin_deposits", over)]


def test_wire_out_mismatch_and_missing_fee(dbs, hist):
    d = hist.denomination(coin="1", fee_deposit="0.02")
    hist.wire_fee("0.1", start=T0, end=T0 + YEAR)
    c1, c2 = hist.coin(d), hist.coin(d)
    b1, _ = hist.deposit(c1, "1")
    b2, _ = hist.deposit(c2, "1")
    hist.deposit(hist.coin(d), "0.5", batch=b2)
    ok = hist.wire_out([b1], "0.88")
    bad = hist.wire_out([b2], "1.5")                 # expected 1 + 0.5 - 2 * 0.02 - 0.1 = 1.36
    hist.wire_out([], "0", when=T0 - DAY)            # no fee covers it, no deposits
    report = run(dbs)
    assert ok not in [s for _, _, s in found(report)]
    assert found(report) == sorted([("wire_out_inconsistency", "wire_out", bad),
                                    ("row_inconsistency", "wire-fee", T0 - DAY)])
    mismatch = next(f for f in report["findings"] if f["kind"] == "wire_out_inconsistency")
    assert (mismatch["expected"], mismatch["claimed"]) == ("KUDOS:1.36", "KUDOS:1.5")
    assert report["balances"]["aggregation_total_wire_out_delta_plus"] == "KUDOS:0.14"
    assert q(dbs[1], "SELECT wire_out_serial_id, (expected).val, (expected).frac, "
                     "destination_account <> '' FROM auditor.auditor_wire_out_inconsistency") == [
        (bad, 1, 36_000_000, True)]


def test_aggregation_lag_reported_once_when_due(dbs, hist):
    d = hist.denomination(coin="1")
    due = hist.deposit(hist.coin(d), "1", batch=hist.batch(wire_deadline=NOW - 1))[0]
    later = hist.deposit(hist.coin(d), "1", batch=hist.batch(wire_deadline=NOW + DAY))[0]
    paid = hist.deposit(hist.coin(d), "1", batch=hist.batch(wire_deadline=NOW - 1))[0]
    hist.wire_fee("0")
    hist.wire_out([paid], "0.98")
    first = run(dbs)
    assert found(first) == [("deposit_aggregation_lag", "batch_deposits", due)]
    assert first["findings"][0]["total_amount"] == "KUDOS:1"
    assert progress(dbs[1])["wire_batch_deposit_id"] == later
    assert run(dbs)["findings"] == []
    second = run(dbs, now_us=NOW + 2 * DAY)
    assert found(second) == [("deposit_aggregation_lag", "batch_deposits", later)]
    assert progress(dbs[1])["wire_batch_deposit_id"] == paid + 1
    assert q(dbs[1], "SELECT batch_deposit_serial_id, deadline, (total_amount).val "
                     "FROM auditor.auditor_pending_deposits ORDER BY 1") == [
        (due, NOW - 1, 1), (later, NOW + DAY, 1)]


# -- incrementality ----------------------------------------------------------------------------

def test_second_run_adds_nothing_and_new_traffic_is_examined_alone(dbs, hist):
    d = clean_history(hist)
    first = run(dbs)
    before = (progress(dbs[1]), first["balances"], all_findings(dbs[1]))
    again = run(dbs)
    assert again["rows_examined"] == 0 and not again["progress_moved"]
    assert again["findings"] == []
    assert (progress(dbs[1]), again["balances"], all_findings(dbs[1])) == before
    # More traffic: one reserve credited in this increment, overdrawn in the next.
    pub, uuid, _ = hist.reserve("1.01")
    hist.withdraw(uuid, d, "1.01")
    third = run(dbs)
    assert third["checks"]["reserves"]["rows_examined"] == {
        "reserves": 1, "reserves_in": 1, "reserves_out": 1}
    assert third["checks"]["coins"]["rows_examined"] == {"reserves_out": 1}
    assert third["findings"] == []
    over = hist.withdraw(uuid, d, "1.01")
    fourth = run(dbs)
    assert found(fourth) == [("reserve_balance_insufficient", "reserves_out", over)]
    assert fourth["checks"]["reserves"]["progress_after"]["reserves_reserve_out_serial_id"] == over + 1


def test_audit_with_auditor_schema_in_the_exchange_database(exchange_db):
    dbinit.auditor_dbinit(exchange_db)
    h = History(exchange_db)
    d = h.denomination()
    _, uuid, _ = h.reserve("1")
    over = h.withdraw(uuid, d, "1.01")
    h.close_conn()
    report = audit.run(exchange_db, exchange_db, now_us=NOW)
    assert found(report) == [("reserve_balance_insufficient", "reserves_out", over)]
    assert report["currency"] is None
    assert report["findings"][0]["inconsistency_amount"] == {"val": 0, "frac": 1_000_000}


def test_dry_run_stores_nothing(dbs, hist):
    d = hist.denomination()
    _, uuid, _ = hist.reserve("1")
    hist.withdraw(uuid, d, "1.01")
    report = run(dbs, dry_run=True, internal=True)
    assert report["dry_run"] and len(report["findings"]) == 1
    assert progress(dbs[1]) == {} and all_findings(dbs[1]) == []
    assert len(run(dbs)["findings"]) == 1


# -- internal audit ------------------------------------------------------------------------------

def test_internal_finds_balance_mismatch_once(dbs, hist):
    d = hist.denomination(coin="1", fee_withdraw="0.01")
    _, u1, _ = hist.reserve("3", current_balance="1.99")    # 3 - 1.01 = 1.99: right
    _, u2, _ = hist.reserve("3", current_balance="2.5")     # wrong
    hist.withdraw(u1, d, "1.01")
    hist.withdraw(u2, d, "1.01")
    assert run(dbs)["findings"] == [], "without -i the summaries are not looked at"
    report = run(dbs, internal=True)
    wrong = found(report, "reserve_balance_summary_wrong")
    assert wrong == [("reserve_balance_summary_wrong", "reserves", u2)]
    f = next(f for f in report["findings"] if f["kind"] == "reserve_balance_summary_wrong")
    assert (f["exchange_amount"], f["auditor_amount"]) == ("KUDOS:2.5", "KUDOS:1.99")
    assert run(dbs, internal=True)["findings"] == []
    q(dbs[0], "UPDATE exchange.reserves SET current_balance = ROW(7, 0) WHERE reserve_uuid = %s",
      (u2,))
    assert found(run(dbs, internal=True)) == [("reserve_balance_summary_wrong", "reserves", u2)]


def test_internal_coin_remaining_and_done_flags(dbs, hist):
    d = hist.denomination(coin="1")
    good, bad = hist.coin(d, remaining="0.4"), hist.coin(d, remaining="0.9")
    b1, _ = hist.deposit(good, "0.6")
    hist.deposit(bad, "0.6")
    q(dbs[0], "UPDATE exchange.batch_deposits SET done = TRUE WHERE batch_deposit_serial_id = %s",
      (b1,))
    report = run(dbs, internal=True)
    kc = q(dbs[0], "SELECT known_coin_id FROM exchange.known_coins WHERE coin_pub = %s", (bad,))
    assert found(report) == sorted([
        ("amount_arithmetic_inconsistency", "known_coins", kc[0][0]),
        ("row_inconsistency", "batch_deposits", b1)])


def test_internal_refused_on_safe_copy_exit_2(cluster, conf, cli, tmp_path):
    ex = cluster.createdb(f"safe_{os.getpid()}_{time.monotonic_ns() % 10**6}")
    dbinit.exchange_dbinit(ex, role="safe-copy")
    dbinit.auditor_dbinit(ex)
    path = conf("a.conf", {"exchangedb-postgres": {"CONFIG": ex},
                           "auditordb-postgres": {"CONFIG": ex}})
    res = cli("audit", "-c", path, "-t", "-i")
    assert res.returncode == 2 and "refused on a safe copy" in res.stderr
    assert q(ex, "SELECT count(*) FROM auditor.auditor_progress") == [(0,)]
    res = cli("audit", "-c", path, "-t")
    assert res.returncode == 0, res.stderr


# -- CLI -------------------------------------------------------------------------------------------

def _conf(conf, dbs, currency="KUDOS"):
    sections = {"exchangedb-postgres": {"CONFIG": dbs[0]}, "auditordb-postgres": {"CONFIG": dbs[1]}}
    if currency:
        sections["exchange"] = {"CURRENCY": currency}
    return conf("audit.conf", sections)


def test_cli_findings_exit_0_with_report_and_summary(dbs, hist, conf, cli, tmp_path):
    d = hist.denomination()
    _, uuid, _ = hist.reserve("1")
    over = hist.withdraw(uuid, d, "1.01")
    report_path = tmp_path / "report.json"
    res = cli("audit", "-c", _conf(conf, dbs), "-t", "--report", report_path,
              "--now", NOW)
    assert res.returncode == 0, res.stderr
    assert "new findings: reserve_balance_insufficient 1" in res.stdout
    report = json.loads(report_path.read_text())
    assert found(report) == [("reserve_balance_insufficient", "reserves_out", over)]
    assert report["findings"][0]["inconsistency_amount"] == "KUDOS:0.01"
    res = cli("audit", "-c", _conf(conf, dbs), "-t", "--report", "-")
    assert res.returncode == 0 and json.loads(res.stdout)["findings"] == []


def test_cli_failures_of_the_audit_itself(dbs, cluster, conf, cli):
    fresh = cluster.createdb(f"noaud_{os.getpid()}_{time.monotonic_ns() % 10**6}")
    path = conf("x.conf", {"exchangedb-postgres": {"CONFIG": dbs[0]},
                           "auditordb-postgres": {"CONFIG": fresh}})
    res = cli("audit", "-c", path, "-t")
    assert res.returncode == 5 and "auditor database" in res.stderr
    res = cli("audit", "-c", conf("y.conf", {"exchangedb-postgres": {"CONFIG": dbs[0]}}), "-t")
    assert res.returncode == 6 and "auditordb-postgres" in res.stderr
    # A second audit while one holds the auditor database.
    with audit.Audit(dbs[0], dbs[1]):
        res = cli("audit", "-c", _conf(conf, dbs), "-t")
    assert res.returncode == 1 and "another audit is running" in res.stderr


def test_crash_mid_run_leaves_progress_and_findings_consistent(dbs, hist, cluster, conf, tmp_path):
    """kill -9 while the coins check waits inside its transaction; the rerun is complete."""
    d = hist.denomination(coin="1")
    _, uuid, _ = hist.reserve("1")
    over_w = hist.withdraw(uuid, d, "1.01")
    coin = hist.coin(d)
    hist.deposit(coin, "0.6")
    _, over_d = hist.deposit(coin, "0.6")
    expected = sorted([("reserve_balance_insufficient", "reserves_out", over_w),
                       ("coin_overspent", "coin_deposits", over_d),
                       # the denomination's only coin overspent: an emergency by value
                       ("emergency", None, None)])
    blocker = psycopg.connect(dbs[1])
    blocker.execute("LOCK TABLE auditor.auditor_coin_inconsistency IN ACCESS EXCLUSIVE MODE")
    proc = subprocess.Popen([sys.executable, "-m", "taler_ops.cli", "audit", "-c",
                             _conf(conf, dbs), "-t", "--now", str(NOW)],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    try:
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            waiting = q(cluster.uri(), "SELECT count(*) FROM pg_stat_activity WHERE "
                        "application_name = 'taler-ops' AND wait_event_type = 'Lock'")[0][0]
            if waiting:
                break
            time.sleep(0.05)
        assert waiting, "the audit never reached the coins findings"
        # The reserves check has committed; the coins check is mid-transaction.
        assert q(dbs[1], "SELECT count(*) FROM "
                         "auditor.auditor_reserve_balance_insufficient_inconsistency") == [(1,)]
        proc.send_signal(signal.SIGKILL)
        proc.wait()
    finally:
        blocker.rollback()
        blocker.close()
    prog = progress(dbs[1])
    assert prog["reserves_reserve_out_serial_id"] == over_w + 1
    assert "coins_deposit_serial_id" not in prog, "the killed check committed nothing"
    assert q(dbs[1], "SELECT count(*) FROM taler_ops.audit_coins") == [(0,)]
    rerun = run(dbs)
    assert found(rerun) == [("coin_overspent", "coin_deposits", over_d),
                            ("emergency", "denominations", d)]
    assert all_findings(dbs[1]) == stored(expected)
    assert rerun["balances"]["coin_irregular_loss"] == "KUDOS:0.2"
    assert run(dbs)["findings"] == []


def test_daemon_picks_up_new_data_and_stops_on_sigterm(dbs, hist, conf, tmp_path):
    d = hist.denomination()
    _, uuid, _ = hist.reserve("1")
    report_path = tmp_path / "r.json"
    proc = subprocess.Popen([sys.executable, "-m", "taler_ops.cli", "audit", "-c",
                             _conf(conf, dbs), "--poll-max", "0.5", "--report", str(report_path),
                             "--now", str(NOW)],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        def wait_for(pred):
            deadline = time.monotonic() + 60
            while time.monotonic() < deadline:
                if pred():
                    return True
                time.sleep(0.1)
            return False
        assert wait_for(lambda: "reserves_reserve_in_serial_id" in progress(dbs[1]))
        over = hist.withdraw(uuid, d, "1.01")
        assert wait_for(lambda: all_findings(dbs[1]) == stored([
            ("reserve_balance_insufficient", "reserves_out", over)]))
        proc.send_signal(signal.SIGTERM)
        out, err = proc.communicate(timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 0, err
    assert "reserve_balance_insufficient 1" in out
    assert json.loads(report_path.read_text())["role"] == "primary"


# -- Ansible -----------------------------------------------------------------------------------------

def test_module_check_mode_then_run(dbs, hist, conf, module_runner):
    d = hist.denomination()
    _, uuid, _ = hist.reserve("1", current_balance="5")
    hist.withdraw(uuid, d, "1.01")
    path = _conf(conf, dbs)
    res, _ = module_runner("taler_audit", {"config": path, "internal": True}, check=True)
    assert res["changed"] is True and res["new_findings"] == 2, res
    assert progress(dbs[1]) == {}
    res, _ = module_runner("taler_audit", {"config": path, "internal": True})
    assert res["changed"] is True
    assert res["new_findings_by_kind"] == {"reserve_balance_insufficient": 1,
                                           "reserve_balance_summary_wrong": 1}
    res, _ = module_runner("taler_audit", {"config": path, "internal": True})
    assert res["changed"] is False and res["new_findings"] == 0
    assert res["open_findings_by_kind"]["reserve_balance_summary_wrong"] == 1


def test_internal_audit_playbook(dbs, hist, tmp_path, auditor_flavour):
    # The playbook audits with the wall clock: keep the reserve from expiring.
    _, uuid, _ = hist.reserve("1", current_balance="0.5", expiration=T0 + 100 * YEAR)
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    inventory = tmp_path / "hosts.yml"
    inventory.write_text(json.dumps({"all": {"children": {"exchange": {"hosts": {
        "exchange-test": {"ansible_connection": "local",
                          "ansible_python_interpreter": sys.executable}}}}}}))
    report = tmp_path / "report.json"
    extra = {"taler_audit_config": str(tmp_path / "internal.conf"),
             "taler_audit_exchangedb_config": dbs[0], "taler_audit_auditordb_config": dbs[1],
             "taler_audit_cli": os.path.join(os.path.dirname(sys.executable), "taler-ops"),
             "taler_audit_report": str(report), "taler_audit_fail_on_findings": True,
             "taler_audit_settle": 0.2}
    if auditor_flavour == "taler":
        extra["taler_audit_auditor_sql_dir"] = os.path.join(require_taler_sql(), "auditor")
    env = dict(os.environ, ANSIBLE_CONFIG=os.path.join(root, "ansible.cfg"), ANSIBLE_NOCOLOR="1")
    cmd = [os.path.join(os.path.dirname(sys.executable), "ansible-playbook"), "-i",
           str(inventory), os.path.join(root, "playbooks", "internal-audit.yml"),
           "-e", json.dumps(extra)]
    res = subprocess.run(cmd, capture_output=True, text=True, cwd=root, env=env)
    assert res.returncode != 0 and "stored 1 finding(s)" in res.stdout, res.stdout
    data = json.loads(report.read_text())
    assert found(data) == [("reserve_balance_summary_wrong", "reserves", uuid)]
    assert dbs[0] not in res.stdout or "password" not in dbs[0]
    assert oct((tmp_path / "internal.conf").stat().st_mode & 0o777) == "0o600"
    # Without new data and without the fail switch, the play passes.
    extra["taler_audit_fail_on_findings"] = False
    cmd[-1] = json.dumps(extra)
    res = subprocess.run(cmd, capture_output=True, text=True, cwd=root, env=env)
    assert res.returncode == 0, res.stdout + res.stderr
    assert "new findings: none" in res.stdout


# -- generated histories (taler_ops.sim.workload) -------------------------------------------------

GEN_NOW = 1_760_000_000_000_000
FINDING_OF = {"coin_overspend": "coin_overspent", "reserve_overdraft": "reserve_balance_insufficient",
              "wire_out_mismatch": "wire_out_inconsistency",
              "reserve_balance_mismatch": "reserve_balance_summary_wrong",
              "close_wrong_account": "row_inconsistency",
              "close_fee_mismatch": "amount_arithmetic_inconsistency"}


def test_generated_history_has_no_findings_even_internal(dbs):
    from taler_ops.sim import workload
    workload.bulk(dbs[0], 4000, seed=3, now_us=GEN_NOW)
    report = run(dbs, now_us=GEN_NOW, internal=True)
    assert report["findings"] == [], report["findings"][:5]
    assert report["rows_examined"] > 4000


def test_generated_injections_are_found_with_table_and_serial(dbs, tmp_path):
    from taler_ops.sim import workload
    record_path = tmp_path / "planted.json"
    workload.bulk(dbs[0], 4000, seed=4, now_us=GEN_NOW, inject=list(FINDING_OF),
                  record_path=str(record_path))
    record = json.loads(record_path.read_text())
    assert sorted(e["kind"] for e in record) == sorted(FINDING_OF)
    expected = sorted((FINDING_OF[e["kind"]], e["table"], e["serial"]) for e in record)
    plain = run(dbs, now_us=GEN_NOW)
    assert found(plain) == [f for f in expected if f[0] != "reserve_balance_summary_wrong"]
    internal = run(dbs, now_us=GEN_NOW, internal=True)
    assert found(internal) == [f for f in expected if f[0] == "reserve_balance_summary_wrong"]
    assert all_findings(dbs[1]) == stored(expected)


def test_generated_more_traffic_examines_only_the_new_rows(dbs):
    from taler_ops.sim import workload
    workload.bulk(dbs[0], 3000, seed=5, now_us=GEN_NOW)
    first = run(dbs, now_us=GEN_NOW)
    assert first["findings"] == []
    inserted = workload.bulk(dbs[0], 1500, seed=6, now_us=GEN_NOW)
    second = run(dbs, now_us=GEN_NOW)
    assert second["findings"] == []
    for name, check in second["checks"].items():
        for table, n in check["rows_examined"].items():
            if (name, table) != ("aggregation", "batch_deposits"):   # the open tail is re-read
                assert n == inserted.get(table, 0), (name, table)
        for key, before in check["progress_before"].items():
            assert check["progress_after"][key] >= before
    assert second["progress_moved"]


@pytest.mark.parametrize("flavour", [flavour_param(f) for f in FLAVOURS])
def test_generated_safe_copy_after_sync(cluster, tmp_path, flavour):
    """gen -> primary, sync -> safe copy, audit the copy; -i is refused there.

    On both flavours (exchange and auditor databases built from Taler's own SQL
    files, or the model): the same planted misbehaviour is found.
    """
    from taler_ops import sync
    from taler_ops.sim import workload
    tag = f"{os.getpid()}_{time.monotonic_ns() % 10**6}"
    primary, safe, aud = (cluster.createdb(f"{n}_{tag}") for n in ("gp", "gs", "ga"))
    if flavour == "taler":
        for uri in (primary, safe):
            build_taler_exchange(uri, sql_root=require_taler_sql())
    dbinit.exchange_dbinit(primary)
    dbinit.exchange_dbinit(safe, role="safe-copy")
    make_auditor_db(aud, flavour)
    record_path = tmp_path / "planted.json"
    workload.bulk(primary, 3000, seed=7, now_us=GEN_NOW, inject=list(FINDING_OF),
                  record_path=str(record_path))
    sync.sync_once(primary, safe)
    record = json.loads(record_path.read_text())
    report = audit.run(safe, aud, now_us=GEN_NOW)
    assert report["role"] == "safe-copy"
    assert found(report) == sorted((FINDING_OF[e["kind"]], e["table"], e["serial"])
                                   for e in record if e["kind"] != "reserve_balance_mismatch")
    with pytest.raises(audit.UsageError, match="refused on a safe copy"):
        audit.run(safe, aud, internal=True)


def test_safe_copy_audit_stops_at_the_last_complete_sync_pass(cluster):
    """Rows past sync_watermarks.complete_serial (the last complete pass) wait."""
    tag = f"{os.getpid()}_{time.monotonic_ns() % 10**6}"
    safe, aud = cluster.createdb(f"cs_{tag}"), cluster.createdb(f"ca_{tag}")
    dbinit.exchange_dbinit(safe, role="safe-copy")
    dbinit.auditor_dbinit(aud)
    h = History(safe)
    d = h.denomination()
    _, uuid, _ = h.reserve("1.01")
    h.withdraw(uuid, d, "1.01")
    q(safe, """INSERT INTO taler_ops.sync_watermarks (table_name, last_serial, complete_serial)
               VALUES ('reserves', 1, 1), ('reserves_in', 1, 1), ('reserves_out', 1, 1)""")
    # Mid-pass: a wire_out copied, its aggregation_tracking rows not yet.
    wo = h.wire_out([], "5")
    over = h.withdraw(uuid, d, "1.01")
    h.close_conn()
    first = audit.run(safe, aud, now_us=NOW)
    assert first["bounded_by"] == "sync cut" and first["findings"] == []
    assert progress(aud)["reserves_reserve_out_serial_id"] == 2
    assert "aggregation_last_wire_out_serial_id" not in progress(aud)
    q(safe, """UPDATE taler_ops.sync_watermarks SET complete_serial = 2
                WHERE table_name = 'reserves_out'""")
    q(safe, """INSERT INTO taler_ops.sync_watermarks (table_name, last_serial, complete_serial)
               VALUES ('wire_out', 1, 1)""")
    second = audit.run(safe, aud, now_us=NOW)
    assert found(second) == sorted([("reserve_balance_insufficient", "reserves_out", over),
                                    ("row_inconsistency", "wire-fee", T0 + DAY),  # no fee
                                    ("wire_out_inconsistency", "wire_out", wo)])


def test_a_run_on_a_safe_copy_records_what_it_saw_of_the_sync(cluster):
    """taler_ops.audit_runs keeps, per run, when the sync last copied a row and how many
    copied rows wait beyond the audit's cut; the report turns it into the sync chart."""
    from taler_ops.audit import report as report_mod
    tag = f"{os.getpid()}_{time.monotonic_ns() % 10**6}"
    safe, aud = cluster.createdb(f"ss_{tag}"), cluster.createdb(f"sa_{tag}")
    dbinit.exchange_dbinit(safe, role="safe-copy")
    dbinit.auditor_dbinit(aud)
    q(safe, """INSERT INTO taler_ops.sync_watermarks
                 (table_name, last_serial, complete_serial, updated_tsz)
               VALUES ('reserves', 0, 0, '2026-01-01 00:00:00Z'),
                      ('wire_out', 5, 3, '2026-01-01 00:10:00Z')""")
    audit.run(safe, aud, now_us=NOW)
    rows = q(aud, "SELECT to_char(sync_last_copy_tsz AT TIME ZONE 'UTC', "
                  "'YYYY-MM-DD HH24:MI:SS'), sync_rows_beyond_cut, runs "
                  "FROM taler_ops.audit_runs")
    assert rows == [("2026-01-01 00:10:00", 2, 1)]
    model = report_mod.collect(aud)
    point, = model["history"]["points"]
    ended = datetime.datetime.strptime(point["ended"], "%Y-%m-%d %H:%M:%SZ")
    # the run ended a fraction of a second after the second its time shows
    assert 0 <= point["sync_age_seconds"] - (
        ended - datetime.datetime(2026, 1, 1, 0, 10)).total_seconds() <= 1
    assert point["sync_rows_beyond_cut"] == 2
    assert "Sync staleness" in report_mod.charts(model)["sync_time"]


def test_the_run_history_stays_bounded(cluster, monkeypatch):
    """An unchanged run merges only into a row that started less than a minute before;
    adding a row prunes rows older than KEEP_DAYS and beyond KEEP_ROWS."""
    from taler_ops.audit import history as run_history
    aud = cluster.createdb(f"rh_{os.getpid()}_{time.monotonic_ns() % 10**6}")
    dbinit.auditor_dbinit(aud)
    now = datetime.datetime.now(datetime.timezone.utc)
    with psycopg.connect(aud) as conn:
        assert run_history.record(conn, now - datetime.timedelta(days=40), 5) == "added"
        conn.execute("UPDATE taler_ops.audit_runs SET ended_tsz = now() - interval '40 days'")
        assert run_history.record(conn, now - datetime.timedelta(minutes=2), 1) == "added"
        # the 40-day-old row went when the second was added
        assert conn.execute("SELECT count(*) FROM taler_ops.audit_runs").fetchone()[0] == 1
        # unchanged, but the newest row started 2 minutes before: a new row
        assert run_history.record(conn, now, 1) == "added"
        assert run_history.record(conn, now, 1) == "merged"
        conn.execute("INSERT INTO auditor.auditor_row_inconsistency (row_table, diagnostic, "
                     "problem_row_id) VALUES ('reserves', 'x', 1)")
        assert run_history.record(conn, now, 1) == "added"      # a count changed
        monkeypatch.setattr(run_history, "KEEP_ROWS", 2)
        conn.execute("UPDATE auditor.auditor_row_inconsistency SET suppressed = TRUE")
        assert run_history.record(conn, now, 1) == "added"
        assert conn.execute("SELECT runs, findings_open, findings_suppressed FROM "
                            "taler_ops.audit_runs ORDER BY run_id").fetchall() == [(1, 1, 0),
                                                                                   (1, 0, 1)]


def test_audit_runs_with_the_auditor_roles_privileges_only(cluster, exchange_db):
    """As the safe_copy role grants: SELECT on exchange and _v, DML on auditor."""
    dbinit.auditor_dbinit(exchange_db)
    h = History(exchange_db)
    d = h.denomination()
    _, uuid, _ = h.reserve("1")
    over = h.withdraw(uuid, d, "1.01")
    h.close_conn()
    role = f"aud_{os.getpid()}_{time.monotonic_ns() % 10**6}"
    q(exchange_db, f"CREATE ROLE {role} LOGIN")
    for stmt in ("GRANT USAGE ON SCHEMA exchange, _v, auditor, taler_ops TO {r}",
                 "GRANT SELECT ON ALL TABLES IN SCHEMA exchange TO {r}",
                 "GRANT SELECT ON ALL TABLES IN SCHEMA taler_ops TO {r}",
                 "GRANT SELECT ON ALL TABLES IN SCHEMA _v TO {r}",
                 "GRANT SELECT, INSERT, UPDATE, DELETE, TRUNCATE ON ALL TABLES IN SCHEMA auditor "
                 "TO {r}",
                 # the audit's own per-coin state beside Taler's schema (not the sync's tables)
                 "GRANT INSERT, UPDATE, DELETE ON taler_ops.audit_coins, taler_ops.audit_runs "
                 "TO {r}"):
        q(exchange_db, stmt.format(r=role))
    uri = exchange_db.replace("postgresql://postgres@", f"postgresql://{role}@")
    report = audit.run(uri, uri, now_us=NOW)
    assert found(report) == [("reserve_balance_insufficient", "reserves_out", over)]
    assert audit.run(uri, uri, now_us=NOW)["findings"] == []


def _in_flight_overdraft(dbs, hist):
    """A withdrawal with a low serial still in flight while a higher one is committed."""
    d = hist.denomination()
    _, poor, _ = hist.reserve("0.5")
    _, rich, _ = hist.reserve("5")
    flight = psycopg.connect(dbs[0])
    flight.execute("INSERT INTO exchange.reserves_out (h_blind_ev, denominations_serial, "
                   "denom_sig, reserve_uuid, reserve_sig, execution_date, amount_with_fee) "
                   "VALUES (%s, %s, 'x', %s, %s, %s, ROW(1, 1000000))",
                   (os.urandom(64), d, poor, os.urandom(64), T0))
    hist.withdraw(rich, d, "1.01")
    return flight


def test_without_settle_a_row_committed_late_below_progress_is_missed(dbs, hist):
    """The hazard --settle exists for (Taler's helpers share it)."""
    flight = _in_flight_overdraft(dbs, hist)
    assert run(dbs)["findings"] == []
    flight.commit()
    flight.close()
    assert run(dbs)["findings"] == [], "serial 1 lies below the progress point now"


def _maxima_read(monkeypatch):
    """An event set once the audit has read the tables' maxima (and starts to settle)."""
    import threading
    read = threading.Event()
    real = audit.table_maxima

    def spy(ex):
        maxima = real(ex)
        read.set()
        return maxima
    monkeypatch.setattr(audit, "table_maxima", spy)
    return read


def test_settle_waits_for_rows_in_flight(dbs, hist, monkeypatch):
    import threading
    flight = _in_flight_overdraft(dbs, hist)
    read = _maxima_read(monkeypatch)
    out = {}
    worker = threading.Thread(target=lambda: out.update(report=run(dbs, settle=3.0)))
    worker.start()
    assert read.wait(60), "the audit never read the maxima"
    flight.commit()           # while the audit settles
    flight.close()
    worker.join()
    assert found(out["report"]) == [("reserve_balance_insufficient", "reserves_out", 1)]
    assert out["report"]["bounded_by"] == "maxima settled for 3.0 s"


def test_small_state_cache_gives_the_same_results(dbs, cluster, tmp_path, monkeypatch,
                                                  auditor_flavour):
    """State written out and reloaded mid-increment (large backlogs) changes nothing."""
    from taler_ops.audit import coins as audit_coins, reserves as audit_reserves
    from taler_ops.sim import workload
    record_path = tmp_path / "planted.json"
    workload.bulk(dbs[0], 3000, seed=8, now_us=GEN_NOW, inject=["coin_overspend",
                                                                "reserve_overdraft"],
                  record_path=str(record_path))
    other = cluster.createdb(f"cache_{os.getpid()}_{time.monotonic_ns() % 10**6}")
    make_auditor_db(other, auditor_flavour)
    normal = run(dbs, now_us=GEN_NOW)
    monkeypatch.setattr(audit_reserves, "CACHE_LIMIT", 7)
    monkeypatch.setattr(audit_coins, "CACHE_LIMIT", 7)
    small = audit.run(dbs[0], other, now_us=GEN_NOW, currency="KUDOS")
    assert len(normal["findings"]) == 2
    assert small["findings"] == normal["findings"]
    assert small["balances"] == normal["balances"]
    state = ("SELECT reserve_pub, reserve_balance::text, reserve_loss::text, "
             "withdraw_fee_balance::text, close_fee_balance::text, expiration_date "
             "FROM auditor.auditor_reserves ORDER BY 1")
    assert q(other, state) == q(dbs[1], state)
    coins = "SELECT coin_pub, spent::text, refunded::text FROM taler_ops.audit_coins ORDER BY 1"
    assert q(other, coins) == q(dbs[1], coins)
    denoms = ("SELECT denom_pub_hash, denom_balance::text, denom_loss::text, num_issued, "
              "denom_risk::text, recoup_loss::text FROM auditor.auditor_denomination_pending "
              "ORDER BY 1")
    assert q(other, denoms) == q(dbs[1], denoms) and q(other, denoms)


def test_auditor_database_on_another_server(dbs, hist):
    from pgcluster import Cluster
    other = Cluster("audit-aud").start()
    try:
        aud = other.createdb("auditor")
        dbinit.auditor_dbinit(aud)
        d = hist.denomination()
        _, uuid, _ = hist.reserve("1")
        over = hist.withdraw(uuid, d, "1.01")
        assert found(audit.run(dbs[0], aud, now_us=NOW)) == [
            ("reserve_balance_insufficient", "reserves_out", over)]
        assert audit.run(dbs[0], aud, now_us=NOW)["findings"] == []
        assert progress(aud)["reserves_reserve_out_serial_id"] == over + 1
        assert progress(dbs[1]) == {}, "the exchange server's auditor database is untouched"
    finally:
        other.destroy()


def test_internal_with_settle_skips_what_committed_during_the_wait(dbs, hist, monkeypatch):
    """A live primary: a withdrawal and its current_balance update land while the audit
    waits; the audit state does not hold them yet, so that reserve is compared next run."""
    import threading
    d = hist.denomination(coin="1", fee_withdraw="0.01")
    pub, uuid, _ = hist.reserve("5", current_balance="3.99")
    hist.withdraw(uuid, d, "1.01")
    read = _maxima_read(monkeypatch)
    out = {}
    worker = threading.Thread(
        target=lambda: out.update(report=run(dbs, internal=True, settle=3.0)))
    worker.start()
    assert read.wait(60), "the audit never read the maxima"
    with psycopg.connect(dbs[0]) as conn:       # the exchange at work: one transaction
        conn.execute("INSERT INTO exchange.reserves_out (h_blind_ev, denominations_serial, "
                     "denom_sig, reserve_uuid, reserve_sig, execution_date, amount_with_fee) "
                     "VALUES (%s, %s, 'x', %s, %s, %s, ROW(1, 1000000))",
                     (os.urandom(64), d, uuid, os.urandom(64), T0))
        conn.execute("UPDATE exchange.reserves SET current_balance = ROW(2, 98000000) "
                     "WHERE reserve_uuid = %s", (uuid,))
    worker.join()
    assert out["report"]["findings"] == []
    later = run(dbs, internal=True)
    assert later["findings"] == [] and later["checks"]["reserves"]["rows_examined"] == {
        "reserves_out": 1}


def test_a_check_writes_bad_sig_losses_through_the_common_interface(dbs):
    """Check.finding(kind, **Taler's columns) is what a signature check plugs into."""
    from taler_ops.audit.common import Check, Units
    with psycopg.connect(dbs[1], autocommit=True) as aud:
        check = Check("signatures", None, aud, NOW, "KUDOS")
        with aud.transaction():
            check.finding("bad_sig_loss", problem_row_id=7, operation="deposit",
                          loss=Units(150_000_000), operation_specific_pub=b"\x05" * 32)
            check.write()
        entry = check.report_findings()[0]
        assert (entry["taler_table"], entry["table"], entry["serial"], entry["loss"]) == (
            "auditor_bad_sig_losses", "deposit", 7, "KUDOS:1.5")
        assert audit.open_findings_by_kind(aud) == {"bad_sig_loss": 1}
    assert q(dbs[1], "SELECT problem_row_id, operation, (loss).val, (loss).frac, "
                     "operation_specific_pub, suppressed FROM auditor.auditor_bad_sig_losses") == [
        (7, "deposit", 1, 50_000_000, b"\x05" * 32, False)]


def test_model_and_taler_auditor_databases_end_up_identical(cluster, tmp_path):
    """One exchange history audited into a model-built and a Taler-built auditor database:
    every row of every Taler table (row ids aside) and the audit's own state are equal."""
    from taler_ops.schema import auditor_schema
    from taler_ops.sim import workload
    require_taler_sql()
    tag = f"{os.getpid()}_{time.monotonic_ns() % 10**6}"
    ex = cluster.createdb(f"ie_{tag}")
    dbinit.exchange_dbinit(ex)
    workload.bulk(ex, 2500, seed=11, now_us=GEN_NOW, inject=list(FINDING_OF),
                  record_path=str(tmp_path / "planted.json"))
    auds = {f: make_auditor_db(cluster.createdb(f"ia_{f}_{tag}"), f) for f in FLAVOURS}
    reports = {f: audit.run(ex, uri, now_us=GEN_NOW, internal=True, currency="KUDOS")
               for f, uri in auds.items()}
    assert reports["model"]["findings"] == reports["taler"]["findings"]
    assert len(reports["model"]["findings"]) == len(FINDING_OF)

    def contents(uri):
        out = {}
        with psycopg.connect(uri) as conn:
            for table in auditor_schema.TABLES:
                cols = [r[0] for r in conn.execute(
                    "SELECT attname FROM pg_attribute WHERE attrelid = %s::regclass "
                    "AND attnum > 0 AND NOT attisdropped AND attidentity = '' ORDER BY attnum",
                    (f"auditor.{table}",))]
                out[table] = conn.execute(
                    f"SELECT {', '.join(c + '::text' for c in cols)} FROM auditor.{table} "
                    "ORDER BY 1, 2").fetchall() if cols else []
            out["audit_coins"] = conn.execute(
                "SELECT coin_pub, spent, refunded FROM taler_ops.audit_coins ORDER BY 1").fetchall()
        return out
    model, taler = contents(auds["model"]), contents(auds["taler"])
    assert model == taler
    assert model["auditor_progress"] and model["auditor_reserves"] and model["audit_coins"]
