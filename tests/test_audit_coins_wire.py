"""The audit's coin and wire rules on hand-made histories: overspending, refunds and
purse refunds, revoked and expired denominations, wire transfers and aggregation lag."""

import os

from audit_helpers import auditor_flavour, dbs, hist, xdbs, xhist  # noqa: F401 (fixtures)
from audit_helpers import NOW, PURSES_CHECK_TABLES, found, progress, q, run
from audit_history import DAY, T0, YEAR


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
