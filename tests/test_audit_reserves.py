"""The audit's reserve rules (docs/economics.md) on hand-made histories: balances,
overdrafts, expiry and closes, purse merges and recoups, with Taler's semantics at
the edges (issue #17)."""

import os

from audit_helpers import auditor_flavour, dbs, hist, xdbs, xhist  # noqa: F401 (fixtures)
from audit_helpers import (NOW, PURSES_CHECK_TABLES, all_findings, clean_history, found, progress, q,
                          run, stored)
from audit_history import DAY, T0, YEAR


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
