"""Hand-made exchange histories for the audit tests: a few rows, every amount chosen.

``History(uri)`` inserts rows directly (the tests' exchange databases have
foreign keys, so parents are created first).  Amounts are decimal strings in
currency units ("1.5"); timestamps are microseconds.
"""

import os
from decimal import Decimal

import psycopg
from psycopg import sql

from taler_ops.schema.exchange_tables import TABLES

SPECS = {t.name: t for t in TABLES}
T0 = 1_700_000_000_000_000
DAY = 86_400_000_000
YEAR = 365 * DAY


def amount(text):
    u = int(Decimal(str(text)) * 100_000_000)
    return divmod(u, 100_000_000)


def _dummy(col):
    if col.is_amount:
        return "0"
    if col.sql_type == "bytea":
        return os.urandom(col.length or 16)
    if col.sql_type == "text":
        return "x"
    if col.sql_type == "boolean":
        return False
    return 0


class History:
    def __init__(self, uri):
        self.conn = psycopg.connect(uri, autocommit=True)
        # Taler's own triggers name their tables unqualified.
        self.conn.execute("SET search_path TO exchange, public")
        self.payto = self.insert("wire_targets", payto_uri="payto://x-taler-bank/ex/merchant",
                                 wire_target_h_payto=os.urandom(32), returning="wire_target_h_payto")

    def close_conn(self):
        self.conn.close()

    def insert(self, table, returning=None, **values):
        spec = SPECS[table]
        names, holders, params = [], [], []
        for col in spec.columns:
            if col.name in values:
                value = values[col.name]
            elif col.name == spec.serial or col.nullable or col.default is not None:
                continue
            else:
                value = _dummy(col)
            names.append(col.name)
            if col.is_amount:
                holders.append(sql.SQL("ROW(%s, %s)::exchange.taler_amount"))
                params.extend(amount(value))
            else:
                holders.append(sql.SQL("%s"))
                params.append(value)
        query = sql.SQL("INSERT INTO {} ({}) VALUES ({}) RETURNING {}").format(
            sql.Identifier("exchange", table), sql.SQL(", ").join(map(sql.Identifier, names)),
            sql.SQL(", ").join(holders), sql.Identifier(returning or spec.serial))
        row = self.conn.execute(query, params).fetchone()[0]
        return bytes(row) if isinstance(row, (bytes, memoryview)) else row

    # -- the domain, with sane defaults ------------------------------------------------
    def denomination(self, coin="1", fee_withdraw="0.01", fee_deposit="0.02",
                     fee_refresh="0.03", fee_refund="0.04", valid_from=T0 - YEAR,
                     expire_withdraw=T0 + YEAR):
        return self.insert("denominations", denom_pub=os.urandom(32),
                           denom_pub_hash=os.urandom(64), valid_from=valid_from,
                           expire_withdraw=expire_withdraw, expire_deposit=T0 + 2 * YEAR,
                           expire_legal=T0 + 3 * YEAR, coin=coin, fee_withdraw=fee_withdraw,
                           fee_deposit=fee_deposit, fee_refresh=fee_refresh,
                           fee_refund=fee_refund)

    def reserve(self, credit, expiration=T0 + YEAR, current_balance=None):
        pub = os.urandom(32)
        extra = {} if current_balance is None else {"current_balance": current_balance}
        uuid = self.insert("reserves", reserve_pub=pub, expiration_date=expiration,
                           gc_date=expiration + YEAR, **extra)
        serial = None
        if credit is not None:
            serial = self.insert("reserves_in", reserve_pub=pub, credit=credit,
                                 wire_source_h_payto=self.payto, execution_date=T0)
        return pub, uuid, serial

    def withdraw(self, reserve_uuid, denom, amount_with_fee, when=T0):
        return self.insert("reserves_out", h_blind_ev=os.urandom(64), denominations_serial=denom,
                           reserve_uuid=reserve_uuid, execution_date=when,
                           amount_with_fee=amount_with_fee)

    def close(self, reserve_pub, amount_, closing_fee="0", when=T0 + DAY, target=None,
              request_row=None):
        extra = {} if request_row is None else {"close_request_row": request_row}
        return self.insert("reserves_close", reserve_pub=reserve_pub, execution_date=when,
                           amount=amount_, closing_fee=closing_fee,
                           wire_target_h_payto=target or self.payto, **extra)

    def account(self, payto):
        """Another bank account (a wire_targets row); returns its h_payto."""
        return self.insert("wire_targets", payto_uri=payto, wire_target_h_payto=os.urandom(32),
                           returning="wire_target_h_payto")

    def credit(self, reserve_pub, credit, when=T0, source=None):
        return self.insert("reserves_in", reserve_pub=reserve_pub, credit=credit,
                           wire_source_h_payto=source or self.payto, execution_date=when)

    def recoup(self, coin_pub, reserve_out, amount_, when=T0 + DAY):
        return self.insert("recoup", coin_pub=coin_pub, coin_sig=os.urandom(64),
                           coin_blind=os.urandom(32), amount=amount_, recoup_timestamp=when,
                           reserve_out_serial_id=reserve_out)

    def coin(self, denom, remaining=None):
        pub = os.urandom(32)
        extra = {} if remaining is None else {"remaining": remaining}
        self.insert("known_coins", coin_pub=pub, denominations_serial=denom, **extra)
        return pub

    def batch(self, wire_deadline=T0 + YEAR, done=None):
        extra = {} if done is None else {"done": done}
        return self.insert("batch_deposits", shard=0, merchant_pub=os.urandom(32),
                           h_contract_terms=os.urandom(64), wire_deadline=wire_deadline,
                           exchange_timestamp=T0, wire_target_h_payto=self.payto,
                           policy_blocked=False, **extra)

    def deposit(self, coin_pub, amount_with_fee, batch=None):
        batch = batch or self.batch()
        serial = self.insert("coin_deposits", batch_deposit_serial_id=batch, coin_pub=coin_pub,
                             coin_sig=os.urandom(64), amount_with_fee=amount_with_fee)
        return batch, serial

    def refund(self, coin_pub, batch, amount_with_fee):
        return self.insert("refunds", coin_pub=coin_pub, batch_deposit_serial_id=batch,
                           rtransaction_id=int.from_bytes(os.urandom(4), "big"),
                           amount_with_fee=amount_with_fee)

    def melt(self, coin_pub, amount_with_fee, revealed=True):
        """A melt; ``revealed``: with the transfer key its reveal stores (no fresh
        coin here: add refresh_revealed_coins rows), else a hanging refresh."""
        melt = self.insert("refresh_commitments", rc=os.urandom(64), old_coin_pub=coin_pub,
                           amount_with_fee=amount_with_fee)
        if revealed:
            self.insert("refresh_transfer_keys", melt_serial_id=melt,
                        transfer_pub=os.urandom(32), transfer_privs=os.urandom(64))
        return melt

    def revoke(self, denom):
        return self.insert("denomination_revocations", denominations_serial=denom)

    def wire_fee(self, fee, start=T0 - YEAR, end=T0 + YEAR, closing_fee="0",
                 method="x-taler-bank"):
        return self.insert("wire_fee", wire_method=method, start_date=start,
                           end_date=end, wire_fee=fee, closing_fee=closing_fee)

    def wire_out(self, batches, amount_, when=T0 + DAY):
        wtid = os.urandom(32)
        serial = self.insert("wire_out", execution_date=when, wtid_raw=wtid,
                             wire_target_h_payto=self.payto, exchange_account_section="x",
                             amount=amount_)
        for b in batches:
            self.insert("aggregation_tracking", batch_deposit_serial_id=b, wtid_raw=wtid)
        return serial

    def purse(self, amount_with_fee, purse_fee="0", flags=0, when=T0):
        pub = os.urandom(32)
        self.insert("purse_requests", purse_pub=pub, merge_pub=os.urandom(32),
                    purse_creation=when, purse_expiration=when + DAY, flags=flags,
                    amount_with_fee=amount_with_fee, purse_fee=purse_fee,
                    balance=amount_with_fee)
        return pub

    def merge(self, purse_pub, reserve_pub, when=T0, decided=True, refunded=False):
        """The purse merged into the reserve (purse_merges, account_merges) and, if
        ``decided``, the purse decision; returns the account_merges serial."""
        self.insert("purse_merges", reserve_pub=reserve_pub, purse_pub=purse_pub,
                    merge_sig=os.urandom(64), merge_timestamp=when)
        serial = self.insert("account_merges", reserve_pub=reserve_pub, purse_pub=purse_pub,
                             reserve_sig=os.urandom(64), wallet_h_payto=os.urandom(32))
        if decided:
            self.insert("purse_decision", purse_pub=purse_pub, action_timestamp=when,
                        refunded=refunded)
        return serial
