"""Hand-made exchange rows for precise tests (the generator makes realistic bulk data)."""

import hashlib

from taler_ops.schema import hashing

YEAR_US = 365 * 24 * 3600 * 1_000_000


def _b(tag, n):
    return hashlib.sha512(tag.encode()).digest()[:n]


def amount(val, frac=0):
    return f"({val},{frac})"


def denomination(conn, tag="d", coin=(10, 0), expire_legal=10 * YEAR_US, valid_from=0):
    denom_pub = _b("pub" + tag, 40)
    return conn.execute(
        """INSERT INTO exchange.denominations (denom_pub_hash, denom_pub, master_sig, valid_from,
               expire_withdraw, expire_deposit, expire_legal, coin, fee_withdraw, fee_deposit,
               fee_refresh, fee_refund)
           VALUES (%s, %s, %s, %s, %s, %s, %s, ROW(%s, %s), ROW(0,0), ROW(0,0), ROW(0,0), ROW(0,0))
           RETURNING denominations_serial""",
        (hashing.compute("denom_pub_hash", denom_pub), denom_pub, _b("sig" + tag, 64), valid_from,
         expire_legal, expire_legal, expire_legal, *coin)).fetchone()[0]


def wire_target(conn, tag="w"):
    payto = f"payto://x-taler-bank/bank.example/{tag}?receiver-name={tag}"
    h = hashing.full_payto_hash(payto)
    conn.execute(
        "INSERT INTO exchange.wire_targets (wire_target_h_payto, payto_uri, h_normalized_payto) "
        "VALUES (%s, %s, %s) ON CONFLICT DO NOTHING",
        (h, payto, hashing.normalized_payto_hash(payto)))
    return h


def reserve(conn, tag, gc_date, current_balance=(0, 0), expiration_date=None):
    pub = _b("reserve" + tag, 32)
    uuid = conn.execute(
        """INSERT INTO exchange.reserves (reserve_pub, expiration_date, gc_date, current_balance)
           VALUES (%s, %s, %s, ROW(%s, %s)) RETURNING reserve_uuid""",
        (pub, expiration_date if expiration_date is not None else gc_date, gc_date,
         *current_balance)).fetchone()[0]
    return pub, uuid


def reserve_in(conn, reserve_pub, credit, tag="w"):
    h = wire_target(conn, tag)
    return conn.execute(
        """INSERT INTO exchange.reserves_in (reserve_pub, wire_reference, credit,
               wire_source_h_payto, exchange_account_section, execution_date)
           VALUES (%s, 1, ROW(%s, %s), %s, 'main', 0) RETURNING reserve_in_serial_id""",
        (reserve_pub, *credit, h)).fetchone()[0]


def reserve_out(conn, reserve_uuid, denom_serial, amount_with_fee, tag):
    return conn.execute(
        """INSERT INTO exchange.reserves_out (h_blind_ev, denominations_serial, denom_sig,
               reserve_uuid, reserve_sig, execution_date, amount_with_fee)
           VALUES (%s, %s, %s, %s, %s, 1, ROW(%s, %s)) RETURNING reserve_out_serial_id""",
        (_b("blind" + tag, 64), denom_serial, b"sig", reserve_uuid, _b("rsig" + tag, 64),
         *amount_with_fee)).fetchone()[0]


def wire_fee(conn, method, start, end):
    conn.execute(
        """INSERT INTO exchange.wire_fee (wire_method, start_date, end_date, wire_fee,
               closing_fee, master_sig) VALUES (%s, %s, %s, ROW(0, 1), ROW(0, 1), %s)""",
        (method, start, end, _b(f"wf{method}{start}", 64)))


def count(conn, table):
    return conn.execute(f"SELECT count(*) FROM exchange.{table}").fetchone()[0]
