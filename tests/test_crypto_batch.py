"""Batch verification over a process pool gives the sequential verdicts, in order."""

from crypto_rows import signed
from taler_ops.crypto import batch


def _rows(name, n, forged_every, cipher="rsa"):
    rows = []
    for i in range(n):
        row, _key, ctx = signed(name, cipher)
        if i % forged_every == 0:
            sig = row["sig"]
            row["sig"] = sig[:-1] + bytes([sig[-1] ^ 1])
        rows.append(row)
    return rows, ctx


def test_pool_matches_sequential_in_order():
    rows, ctx = _rows("coin_deposits.coin_sig", 300, 7)
    coins, _ = _rows("known_coins.denom_sig", 100, 5, cipher="cs")
    expected = batch.verify_sequential("coin_deposits.coin_sig", rows, ctx)
    assert expected.count(False) == 43 and expected.count(True) == 257
    with batch.BatchVerifier(workers=2, min_parallel=10) as verifier:
        assert verifier.verify("coin_deposits.coin_sig", rows, ctx) == expected
        # The same pool serves another column.
        assert verifier.verify("known_coins.denom_sig", coins, ctx) == \
            batch.verify_sequential("known_coins.denom_sig", coins, ctx)
        assert verifier._pool is not None


def test_small_batches_stay_in_process():
    rows, ctx = _rows("recoup.coin_sig", 5, 2)
    with batch.BatchVerifier(workers=2) as verifier:
        assert verifier.verify("recoup.coin_sig", rows, ctx) == [False, True, False, True, False]
        assert verifier._pool is None
    assert batch.verify_rows("recoup.coin_sig", [], ctx) == []
