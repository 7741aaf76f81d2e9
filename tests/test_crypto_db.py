"""The catalog's queries against a real exchange schema (the built-in model,
column-for-column Taler's): every query runs, and rows written with valid
signatures read back as valid."""

import psycopg
import pytest

from crypto_rows import CTX, MASTER, denom_terms, denomination, rb
from taler_ops.crypto import batch, catalog, eddsa
from taler_ops.crypto.signature_column import row_from_db

pytestmark = pytest.mark.usefixtures("exchange_db")


def test_every_query_runs(exchange_db):
    with psycopg.connect(exchange_db) as conn:
        for spec in catalog.COLUMNS:
            cur = conn.execute(spec.query(), {"after": 0, "limit": 10})
            names = [d.name for d in cur.description]
            assert names[:2] == ["serial", "sig"], spec.name
            assert cur.fetchall() == []


def _amount(a):
    return f"ROW({a[0]},{a[1]})::exchange.taler_amount"


def test_rows_read_back_valid(exchange_db):
    dk = denomination("rsa")
    terms = denom_terms(dk)
    spec = catalog.get("denominations.master_sig")
    master_sig = spec.sign(terms, CTX, MASTER)
    reserve_seed = rb(32)
    coin_pub, bks = rb(32), rb(32)
    planchet = dk.make_coin(coin_pub, bks)
    withdraw = catalog.get("reserves_out.reserve_sig")
    reserve_sig = withdraw.sign(dict(amount_with_fee=(5, 1000000), denom_pub_hash=dk.denom_pub_hash,
                                     h_blind_ev=planchet.h_coin_ev), CTX, reserve_seed)
    with psycopg.connect(exchange_db) as conn:
        conn.execute(
            "INSERT INTO exchange.denominations (denominations_serial, denom_pub_hash, denom_pub,"
            " master_sig, valid_from, expire_withdraw, expire_deposit, expire_legal, coin,"
            " fee_withdraw, fee_deposit, fee_refresh, fee_refund) VALUES (1, %s, %s, %s, %s, %s, %s, %s, "
            + ", ".join(_amount(terms[a]) for a in
                        ("coin", "fee_withdraw", "fee_deposit", "fee_refresh", "fee_refund")) + ")",
            (dk.denom_pub_hash, dk.denom_pub, master_sig, terms["valid_from"],
             terms["expire_withdraw"], terms["expire_deposit"], terms["expire_legal"]))
        conn.execute("INSERT INTO exchange.reserves (reserve_uuid, reserve_pub, expiration_date, gc_date)"
                     " VALUES (1, %s, 0, 0)", (eddsa.public_key(reserve_seed),))
        conn.execute("INSERT INTO exchange.reserves_out (reserve_out_serial_id, h_blind_ev,"
                     " denominations_serial, denom_sig, reserve_uuid, reserve_sig, execution_date,"
                     " amount_with_fee) VALUES (1, %s, 1, %s, 1, %s, 0, ROW(5,1000000)::exchange.taler_amount)",
                     (planchet.h_coin_ev, planchet.blind_sig, reserve_sig))
        conn.execute("INSERT INTO exchange.known_coins (known_coin_id, denominations_serial, coin_pub,"
                     " denom_sig) VALUES (1, 1, %s, %s), (2, 1, %s, %s)",
                     (coin_pub, planchet.coin_sig, rb(32), planchet.coin_sig))
        verdicts = {}
        for name in ("denominations.master_sig", "reserves_out.reserve_sig", "reserves_out.denom_sig",
                     "known_coins.denom_sig"):
            spec = catalog.get(name)
            cur = conn.execute(spec.query(), {"after": 0, "limit": 100})
            names = [d.name for d in cur.description]
            rows = [row_from_db(names, r) for r in cur]
            verdicts[name] = [(r["serial"], v) for r, v in
                              zip(rows, batch.verify_rows(name, rows, CTX, workers=1))]
    assert verdicts == {
        "denominations.master_sig": [(1, True)],
        "reserves_out.reserve_sig": [(1, True)],
        "reserves_out.denom_sig": [(1, True)],
        "known_coins.denom_sig": [(1, True), (2, False)],   # coin 2 carries coin 1's signature
    }


def test_workers_read_their_own_ranges(exchange_db):
    """verify_table: workers read serial ranges themselves and report only the
    rows that are not valid, the same ones as the in-process path."""
    spec = catalog.get("recoup.coin_sig")
    dk = denomination("rsa")
    seeds = [rb(32) for _ in range(40)]
    with psycopg.connect(exchange_db) as conn:
        # Only the signatures matter here: no reserves_out rows for the recoups' references.
        conn.execute("SET session_replication_role = replica")
        conn.execute(
            "INSERT INTO exchange.denominations (denominations_serial, denom_pub_hash, denom_pub,"
            " master_sig, valid_from, expire_withdraw, expire_deposit, expire_legal, coin,"
            " fee_withdraw, fee_deposit, fee_refresh, fee_refund) VALUES (1, %s, %s, %s, 0, 0, 0, 0, "
            + ", ".join(["ROW(1,0)::exchange.taler_amount"] * 5) + ")",
            (dk.denom_pub_hash, dk.denom_pub, rb(64)))
        for i, seed in enumerate(seeds, start=1):
            coin_pub, blind = eddsa.public_key(seed), rb(32)
            conn.execute("INSERT INTO exchange.known_coins (known_coin_id, denominations_serial,"
                         " coin_pub, denom_sig) VALUES (%s, 1, %s, %s)", (i, coin_pub, rb(100)))
            sig = spec.sign(dict(denom_pub_hash=dk.denom_pub_hash, coin_blind=blind), CTX, seed)
            if i % 9 == 0:
                sig = sig[:-1] + bytes([sig[-1] ^ 1])
            conn.execute("INSERT INTO exchange.recoup (recoup_uuid, coin_pub, coin_sig, coin_blind,"
                         " amount, recoup_timestamp, reserve_out_serial_id)"
                         " VALUES (%s, %s, %s, %s, ROW(1,0)::exchange.taler_amount, 0, 1)",
                         (i, coin_pub, sig, blind))
    sequential = batch.verify_range(exchange_db, "recoup.coin_sig", CTX, 0, 40, fetch=7)
    assert sequential[0] == 40
    assert [(r["serial"], v) for r, v in sequential[1]] == [(9, False), (18, False), (27, False),
                                                             (36, False)]
    with batch.BatchVerifier(workers=2, min_parallel=4) as verifier:
        checked, bad = verifier.verify_table(exchange_db, "recoup.coin_sig", CTX, 0, 40)
        assert checked == 40 and [(r["serial"], v) for r, v in bad] == \
            [(r["serial"], v) for r, v in sequential[1]]
        assert verifier.verify_table(exchange_db, "recoup.coin_sig", CTX, 9, 17) == (8, [])
