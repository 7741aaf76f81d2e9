"""The aggregation, transfer and purses checks of issue #17 part 2: a wire transfer's
target account, date and the wire fee of its payto's method; pending deposits settled
once paid; on hand-made histories and on generated ones with planted misbehaviour, on
both flavours (exchange and auditor databases of the model, or built from Taler's SQL)."""

import json
import os

from audit_helpers import xdbs, xhist  # noqa: F401 (fixtures)
from audit_helpers import GEN_NOW, NOW, _conf, all_findings, found, progress, q, run
from audit_history import DAY, T0
from taler_build import require_taler_sql
from taler_ops.schema import auditor_schema, dbinit


def wire_out(h, batches, amount, target, when=T0 + DAY):
    wtid = os.urandom(32)
    serial = h.insert("wire_out", execution_date=when, wtid_raw=wtid,
                      wire_target_h_payto=target, exchange_account_section="x", amount=amount)
    rows = [h.insert("aggregation_tracking", batch_deposit_serial_id=b, wtid_raw=wtid)
            for b in batches]
    return serial, rows


def batch_to(h, target, wire_deadline=T0 + DAY):
    batch = h.batch(wire_deadline=wire_deadline)
    h.conn.execute("UPDATE exchange.batch_deposits SET wire_target_h_payto = %s "
                   "WHERE batch_deposit_serial_id = %s", (target, batch))
    return batch


def test_wire_transfer_target_date_and_the_fee_of_its_method(xdbs, xhist):
    h = xhist
    d = h.denomination(coin="1", fee_deposit="0.02")
    h.wire_fee("0.1")                                       # x-taler-bank
    h.wire_fee("0.2", method="iban")
    iban = h.account("payto://iban/DE89370400440532013000?receiver-name=Shop")
    # Paid to its own iban account, with the iban fee: clean.
    ok_batch = batch_to(h, iban, wire_deadline=T0)
    h.deposit(h.coin(d), "1", batch=ok_batch)
    ok, _ = wire_out(h, [ok_batch], "0.78", iban)           # 1 - 0.02 - 0.2
    # The deposit is owed to the iban account, the money went to the x-taler-bank one.
    stolen = batch_to(h, iban, wire_deadline=T0)
    h.deposit(h.coin(d), "1", batch=stolen)
    _, (wrong_row,) = wire_out(h, [stolen], "0.88", h.payto)
    # Paid an hour before the deposit was made (exchange_timestamp T0).
    early_batch = batch_to(h, h.payto, wire_deadline=T0 + 2 * DAY)
    h.deposit(h.coin(d), "1", batch=early_batch)
    _, (early_row,) = wire_out(h, [early_batch], "0.88", h.payto, when=T0 - DAY // 24)
    # A method without a wire fee, and a target whose URI names no method.
    void = h.account("payto://void/nowhere")
    no_fee, _ = wire_out(h, [], "0", void, when=T0 + 3 * DAY)
    broken = h.account("mailto:nobody@example.com")
    no_method, _ = wire_out(h, [], "0", broken)
    report = run(xdbs)
    assert found(report) == sorted([
        ("row_inconsistency", "aggregation", wrong_row),
        ("row_inconsistency", "aggregation", early_row),
        ("row_inconsistency", "wire-fee", T0 + 3 * DAY),
        ("row_inconsistency", "wire_out", no_method)]), report["findings"]
    assert ok not in [s for _, _, s in found(report)]
    assert report["balances"]["aggregation_total_wire_fee_revenue"] == "KUDOS:0.4"
    assert q(xdbs[1], "SELECT count(*) FROM auditor.auditor_wire_out_inconsistency") == [(0,)]
    assert run(xdbs)["findings"] == [], "each wire_out is examined once"


def test_pending_deposit_deleted_once_paid(xdbs, xhist):
    h = xhist
    d = h.denomination(coin="1", fee_deposit="0")
    h.wire_fee("0")
    late = h.deposit(h.coin(d), "1", batch=h.batch(wire_deadline=NOW - 1))[0]
    first = run(xdbs)
    assert found(first) == [("deposit_aggregation_lag", "batch_deposits", late)]
    assert q(xdbs[1], "SELECT batch_deposit_serial_id FROM auditor.auditor_pending_deposits") == [
        (late,)]
    _, (row,) = wire_out(h, [late], "1", h.payto, when=NOW)
    second = run(xdbs, now_us=NOW + DAY)
    assert second["findings"] == []
    assert q(xdbs[1], "SELECT count(*) FROM auditor.auditor_pending_deposits") == [(0,)]
    assert second["open_findings_by_kind"] == {}
    assert progress(xdbs[1])["wire_aggregation_id"] == row + 1
    assert run(xdbs, now_us=NOW + DAY)["findings"] == []


# -- purses ---------------------------------------------------------------------------------

def purse_deposit(h, purse_pub, coin_pub, amount):
    return h.insert("purse_deposits", purse_pub=purse_pub, coin_pub=coin_pub,
                    amount_with_fee=amount, coin_sig=os.urandom(64))


def test_purse_balances_and_purses_not_closed(xdbs, xhist):
    h = xhist
    d = h.denomination(coin="2", fee_deposit="0.02")
    paid = h.purse("1")
    purse_deposit(h, paid, h.coin(d), "1.02")                 # 1.02 - 0.02 = 1: exactly paid
    h.merge(paid, h.reserve(None)[0])
    short = h.purse("1")
    purse_deposit(h, short, h.coin(d), "0.5")                 # 0.48 < 1
    h.merge(short, h.reserve(None)[0])
    refunded = h.purse("1")
    h.insert("purse_decision", purse_pub=refunded, action_timestamp=T0 + DAY, refunded=True)
    stuck = h.purse("3")                                      # expired at T0 + DAY, undecided
    purse_deposit(h, stuck, h.coin(d), "2")
    fresh = h.purse("1", when=NOW)                            # expires at NOW + DAY
    decision = q(xdbs[0], "SELECT purse_decision_serial_id FROM exchange.purse_decision "
                          "WHERE purse_pub = %s", (short,))[0][0]
    stuck_serial = q(xdbs[0], "SELECT purse_requests_serial_id FROM exchange.purse_requests "
                              "WHERE purse_pub = %s", (stuck,))[0][0]
    report = run(xdbs)
    purse_findings = [f for f in found(report) if f[1] in ("purse_decision", "purse_requests")]
    assert purse_findings == sorted([
        ("amount_arithmetic_inconsistency", "purse_decision", decision),
        ("purse_not_closed", "purse_requests", stuck_serial)]), report["findings"]
    merge = next(f for f in report["findings"] if f["table"] == "purse_decision")
    assert (merge["operation"], merge["exchange_amount"], merge["auditor_amount"]) == (
        "purse-decision: merge", "KUDOS:1", "KUDOS:0.48")
    assert q(xdbs[1], "SELECT purse_pub, (amount).val, (amount).frac, expiration_date FROM "
                      "auditor.auditor_purse_not_closed_inconsistencies") == [
        (stuck, 1, 98_000_000, T0 + DAY)]
    # Per purse state: the undecided ones only.
    assert q(xdbs[1], "SELECT purse_pub, (balance).val, (balance).frac, (target).val, "
                      "expiration_date FROM auditor.auditor_purses ORDER BY expiration_date") == [
        (stuck, 1, 98_000_000, 3, T0 + DAY), (fresh, 0, 0, 1, NOW + DAY)]
    b = report["balances"]
    assert b["purse_total_balance_insufficient_loss"] == "KUDOS:1"
    assert b["purse_total_delayed_decisions"] == "KUDOS:1.98"
    assert {k for k in progress(xdbs[1]) if k.startswith("purse_")} == {
        "purse_request_serial_id", "purse_deposits_serial_id", "purse_decision_serial_id"}
    assert run(xdbs)["findings"] == [], "reported once per purse"
    # The fresh one expires undecided; the stuck one is decided (deleted, not reported again).
    h.insert("purse_decision", purse_pub=stuck, action_timestamp=NOW, refunded=True)
    later = run(xdbs, now_us=NOW + 2 * DAY)
    assert [f["kind"] for f in later["findings"]] == ["purse_not_closed"]
    assert later["findings"][0]["purse_pub"] == fresh.hex()
    assert q(xdbs[1], "SELECT count(*) FROM auditor.auditor_purses") == [(1,)]


# -- merchants' deposit confirmations -----------------------------------------------------

def confirm(uri, h, batch, coins, total="1", **changes):
    """A merchant's confirmation of ``batch`` (its coins ``coins``) in the auditor database."""
    from taler_ops.crypto.hashes import merchant_wire_hash
    from taler_ops.sim.entities import deposit_confirmation
    from taler_ops.sim.target import write_confirmations
    contract, merchant, salt, refund_deadline, deadline, payto = q(
        h_uri(h), "SELECT bd.h_contract_terms, bd.merchant_pub, bd.wire_salt, "
                  "bd.refund_deadline, bd.wire_deadline, wt.payto_uri "
                  "FROM exchange.batch_deposits bd JOIN exchange.wire_targets wt "
                  "USING (wire_target_h_payto) WHERE batch_deposit_serial_id = %s", (batch,))[0]
    dc = deposit_confirmation(batch, contract, merchant_wire_hash(payto, salt), T0,
                              refund_deadline, deadline, int(float(total) * 10**8), coins,
                              [bytes(64)] * len(coins), merchant)
    dc["exchange_sig"] = os.urandom(64)        # several confirmations of one deposit
    dc.update(changes)
    return write_confirmations(uri, [dc])[0]


def h_uri(h):
    return h.conn.info.dsn


def test_deposit_confirmations_matched_deleted_missing_reported_once(xdbs, xhist):
    h = xhist
    d = h.denomination(coin="1")
    c1, c2 = h.coin(d), h.coin(d)
    batch, _ = h.deposit(c1, "0.5")
    h.deposit(c2, "0.5", batch=batch)
    matched = confirm(xdbs[1], h, batch, [c1, c2])
    unknown_coin = confirm(xdbs[1], h, batch, [c1, os.urandom(32)])
    other_account = confirm(xdbs[1], h, batch, [c1], h_wire=os.urandom(64))
    report = run(xdbs)
    assert found(report, "deposit_confirmation_missing") == [
        ("deposit_confirmation_missing", "auditor_deposit_confirmations", unknown_coin),
        ("deposit_confirmation_missing", "auditor_deposit_confirmations", other_account)]
    assert q(xdbs[1], "SELECT row_id FROM auditor.auditor_deposit_confirmations "
                      "ORDER BY row_id") == [(unknown_coin,), (other_account,)]
    assert matched not in [s for _, _, s in found(report)]
    assert report["balances"]["total_missed_deposit_confirmations"] == "KUDOS:2"
    assert report["open_findings_by_kind"]["deposit_confirmation_missing"] == 2
    assert progress(xdbs[1])["deposit_confirmation_serial_id"] == other_account + 1
    again = run(xdbs)
    assert again["findings"] == [] and again["balances"]["total_missed_deposit_confirmations"] \
        == "KUDOS:2"
    # The deposit the confirmation names turns up later (a safe copy behind): settled.
    late_coin = h.coin(d)
    late_batch, _ = h.deposit(late_coin, "1")
    late = confirm(xdbs[1], h, late_batch, [late_coin, os.urandom(32)])
    run(xdbs)
    q(xdbs[1], "UPDATE auditor.auditor_deposit_confirmations SET coin_pubs = %s, "
               "coin_sigs = %s WHERE row_id = %s", ([late_coin], [bytes(64)], late))
    settled = run(xdbs)
    assert settled["findings"] == []
    assert settled["balances"]["total_missed_deposit_confirmations"] == "KUDOS:2"
    assert q(xdbs[1], "SELECT count(*) FROM auditor.auditor_deposit_confirmations "
                      "WHERE row_id = %s", (late,)) == [(0,)]


# -- generated histories with planted misbehaviour ------------------------------------------

# --inject kind -> (finding kind, Taler table) it must give, exactly once
PLANTED = {
    "wire_out_wrong_account": ("row_inconsistency", "auditor_row_inconsistency"),
    "wire_out_before_deposit": ("row_inconsistency", "auditor_row_inconsistency"),
    "purse_not_closed": ("purse_not_closed", "auditor_purse_not_closed_inconsistencies"),
    "purse_merge_unpaid": ("amount_arithmetic_inconsistency",
                           "auditor_amount_arithmetic_inconsistency"),
    "deposit_confirmation_unknown": ("deposit_confirmation_missing",
                                     "auditor_deposit_confirmations"),
}


def test_generated_clean_history_gives_none_of_these_findings(xdbs):
    from taler_ops.sim import generator
    generator.bulk(xdbs[0], 3000, seed=21, now_us=GEN_NOW, auditor_uri=xdbs[1])
    confirmations = q(xdbs[1], "SELECT count(*) FROM auditor.auditor_deposit_confirmations")
    assert confirmations[0][0] > 10
    report = run(xdbs, now_us=GEN_NOW)
    assert report["findings"] == [], report["findings"][:5]
    assert report["checks"]["deposits"]["rows_examined"] == {
        "auditor_deposit_confirmations": confirmations[0][0]}
    for table in {t for _, t in PLANTED.values()}:
        assert q(xdbs[1], f"SELECT count(*) FROM auditor.{table}") == [(0,)], table


def test_generated_planted_kinds_found_once_each_and_again_after_restart(xdbs, tmp_path,
                                                                          request):
    from taler_ops.sim import generator
    record_path = tmp_path / "planted.json"
    generator.bulk(xdbs[0], 3000, seed=22, now_us=GEN_NOW, inject=list(PLANTED),
                   record_path=str(record_path), auditor_uri=xdbs[1])
    record = json.loads(record_path.read_text())
    assert sorted(e["kind"] for e in record) == sorted(PLANTED)
    expected = sorted((PLANTED[e["kind"]][0], e["table"], e["serial"]) for e in record)
    first = run(xdbs, now_us=GEN_NOW)
    assert found(first) == expected, first["findings"]
    for _kind, table in PLANTED.values():
        n = q(xdbs[1], f"SELECT count(*) FROM auditor.{table}")[0][0]
        assert n == sum(1 for k, t in PLANTED.values() if t == table), table
    stored = all_findings(xdbs[1])
    # auditor-dbinit -r clears what Taler's restart.sql clears; the rerun finds the same.
    flavour = request.node.callspec.params["xdbs"]
    sql_dir = os.path.join(require_taler_sql(), "auditor") if flavour == "taler" else None
    dbinit.auditor_dbinit(xdbs[1], restart=True, sql_dir=sql_dir)
    for table in auditor_schema.RESTART_CLEARS:
        assert q(xdbs[1], f"SELECT count(*) FROM auditor.{table}") == [(0,)], table
    again = run(xdbs, now_us=GEN_NOW)
    assert found(again) == expected
    assert all_findings(xdbs[1]) == stored


def test_cli_generate_auditor_writes_confirmations_and_the_audit_reports_the_unknown_one(
        xdbs, conf, cli, tmp_path):
    path = _conf(conf, xdbs)
    refused = cli("generate", "-c", path, "--rows", "1500", "--inject",
                  "deposit_confirmation_unknown")
    assert refused.returncode == 2 and "--auditor" in refused.stderr
    record = tmp_path / "planted.json"
    res = cli("generate", "-c", path, "--rows", "1500", "--seed", "5", "--now", GEN_NOW,
              "--rsa-bits", "1024", "--auditor", "--inject", "deposit_confirmation_unknown",
              "--record", record, "--json")
    assert res.returncode == 0, res.stderr
    (planted,) = json.loads(record.read_text())
    res = cli("audit", "-c", path, "-t", "--now", GEN_NOW)
    assert res.returncode == 0, res.stderr
    assert "new findings: deposit_confirmation_missing 1" in res.stdout
    assert q(xdbs[1], "SELECT row_id FROM auditor.auditor_deposit_confirmations") == [
        (planted["serial"],)]
