"""The internal audit (-i): the exchange's own summaries (reserve balances, coin
remainders, done flags) against the history; refused on a safe copy."""

import os
import time

from audit_helpers import auditor_flavour, dbs, hist  # noqa: F401 (fixtures)
from audit_helpers import found, q, run
from taler_ops.schema import dbinit


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
