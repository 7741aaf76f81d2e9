"""The coins check (docs/economics.md, rules C1-C3) and the escrow balance.

Per coin, auditor.auditor_coins keeps the gross amount spent (deposits, melts,
recoups, recoup-refreshes, purse deposits) and the gross amount given back
(refunds, recoup-refreshes into the old coin); spent - refunded must never
exceed the denomination's value.

Spends carry no common timestamp (melts have none at all), so one increment
is applied in a fixed order: what gives value back first, then recoups,
recoup-refreshes, melts, purse deposits and deposits last, each table in
serial order.  When the new spends of a coin together exceed its value, the
finding therefore names the latest deposit where one is involved, the way an
over-spending wallet would have run into the exchange's check.

Withdrawals (reserves_out) are checked against their denomination's validity
window (C3) and, with fresh coins from refresh reveals, raise the escrow.
"""

from .audit_common import Units, num, units

NAME = "coins"
CACHE_LIMIT = 200_000      # coins held in memory before their state is written out

P_WITHDRAW = "coins_withdraw_serial_id"
P_REVEAL = "coins_refresh_reveal_serial_id"
P_REFUND = "coins_refund_serial_id"
P_RECOUP = "coins_recoup_serial_id"
P_RECOUP_REFRESH = "coins_recoup_refresh_serial_id"
P_MELT = "coins_melt_serial_id"
P_PURSE = "coins_purse_deposits_serial_id"
P_DEPOSIT = "coins_deposit_serial_id"
PROGRESS_KEYS = (P_WITHDRAW, P_REVEAL, P_REFUND, P_RECOUP, P_RECOUP_REFRESH, P_MELT,
                 P_PURSE, P_DEPOSIT)

B_ESCROW = "coins_total_escrowed"
B_IRREGULAR_LOSS = "coins_irregular_loss"
B_DEPOSIT_FEE = "coins_deposit_fee_revenue"
B_MELT_FEE = "coins_melt_fee_revenue"
B_REFUND_FEE = "coins_refund_fee_revenue"
B_RECOUP_LOSS = "coins_total_recoup_loss"
B_UNEXPLAINED = "coins_escrow_unexplained"
BALANCE_KEYS = (B_ESCROW, B_IRREGULAR_LOSS, B_DEPOSIT_FEE, B_MELT_FEE, B_REFUND_FEE,
                B_RECOUP_LOSS, B_UNEXPLAINED)

# Each coin-side query yields (serial, coin_pub, amount, denominations_serial, value,
# fee, revoked, denom_pub_hash) for the coin the row spends or credits.
_COIN = f"""kc.denominations_serial, {num('d.coin')}, {{fee}},
       EXISTS (SELECT 1 FROM exchange.denomination_revocations dr
                WHERE dr.denominations_serial = kc.denominations_serial),
       d.denom_pub_hash"""


def _coin_query(select, table_sql, coin_join, where, fee="NULL::numeric"):
    return (f"SELECT {select}, {_COIN.format(fee=fee)} FROM {table_sql} "
            f"LEFT JOIN exchange.known_coins kc ON {coin_join} "
            "LEFT JOIN exchange.denominations d "
            "ON d.denominations_serial = kc.denominations_serial "
            f"WHERE {where} ORDER BY 1")


# (progress key, table, operation, query, fee balance key, is a spend that C2 forbids)
_CREDITS = (
    (P_REFUND, "refunds", "refund",
     _coin_query(f"t.refund_serial_id, t.coin_pub, {num('t.amount_with_fee')}",
                 "exchange.refunds t", "kc.coin_pub = t.coin_pub",
                 "t.refund_serial_id BETWEEN %(p)s AND %(hi)s", fee=num("d.fee_refund")),
     B_REFUND_FEE),
    (P_RECOUP_REFRESH, "recoup_refresh", "recoup-refresh (old coin)",
     _coin_query(f"t.recoup_refresh_uuid, kc.coin_pub, {num('t.amount')}",
                 "exchange.recoup_refresh t", "kc.known_coin_id = t.known_coin_id",
                 "t.recoup_refresh_uuid BETWEEN %(p)s AND %(hi)s"), None),
)
_SPENDS = (
    (P_RECOUP, "recoup", "recoup",
     _coin_query(f"t.recoup_uuid, t.coin_pub, {num('t.amount')}",
                 "exchange.recoup t", "kc.coin_pub = t.coin_pub",
                 "t.recoup_uuid BETWEEN %(p)s AND %(hi)s"), B_RECOUP_LOSS, False),
    (P_RECOUP_REFRESH, "recoup_refresh", "recoup-refresh",
     _coin_query(f"t.recoup_refresh_uuid, t.coin_pub, {num('t.amount')}",
                 "exchange.recoup_refresh t", "kc.coin_pub = t.coin_pub",
                 "t.recoup_refresh_uuid BETWEEN %(p)s AND %(hi)s"), None, False),
    (P_MELT, "refresh_commitments", "melt",
     _coin_query(f"t.melt_serial_id, t.old_coin_pub, {num('t.amount_with_fee')}",
                 "exchange.refresh_commitments t", "kc.coin_pub = t.old_coin_pub",
                 "t.melt_serial_id BETWEEN %(p)s AND %(hi)s", fee=num("d.fee_refresh")),
     B_MELT_FEE, True),
    (P_PURSE, "purse_deposits", "purse-deposit",
     _coin_query(f"t.purse_deposit_serial_id, t.coin_pub, {num('t.amount_with_fee')}",
                 "exchange.purse_deposits t", "kc.coin_pub = t.coin_pub",
                 "t.purse_deposit_serial_id BETWEEN %(p)s AND %(hi)s"), None, True),
    (P_DEPOSIT, "coin_deposits", "deposit",
     _coin_query(f"t.coin_deposit_serial_id, t.coin_pub, {num('t.amount_with_fee')}",
                 "exchange.coin_deposits t", "kc.coin_pub = t.coin_pub",
                 "t.coin_deposit_serial_id BETWEEN %(p)s AND %(hi)s", fee=num("d.fee_deposit")),
     B_DEPOSIT_FEE, True),
)

_WITHDRAWALS = f"""
SELECT ro.reserve_out_serial_id, ro.execution_date, d.valid_from, d.expire_withdraw,
       {num('d.coin')}, d.denom_pub_hash, r.reserve_pub
  FROM exchange.reserves_out ro
  LEFT JOIN exchange.denominations d ON d.denominations_serial = ro.denominations_serial
  LEFT JOIN exchange.reserves r ON r.reserve_uuid = ro.reserve_uuid
 WHERE ro.reserve_out_serial_id BETWEEN %(p)s AND %(hi)s ORDER BY 1"""

_REVEALS = f"""
SELECT rrc.rrc_serial, {num('d.coin')}
  FROM exchange.refresh_revealed_coins rrc
  LEFT JOIN exchange.denominations d ON d.denominations_serial = rrc.denominations_serial
 WHERE rrc.rrc_serial BETWEEN %(p)s AND %(hi)s ORDER BY 1"""


class _Coin:
    __slots__ = ("denom", "spent", "refunded", "dirty")

    def __init__(self, denom, spent=0, refunded=0, dirty=True):
        self.denom, self.spent, self.refunded, self.dirty = denom, spent, refunded, dirty


class _Coins:
    def __init__(self, aud):
        self.aud = aud
        self.known = {}

    def load(self, pubs):
        want = [bytes(p) for p in set(pubs) if p is not None and bytes(p) not in self.known]
        if not want:
            return
        for pub, denom, spent, refunded in self.aud.execute(
                f"""SELECT coin_pub, denominations_serial, {num('spent')}, {num('refunded')}
                      FROM auditor.auditor_coins WHERE coin_pub = ANY(%s)""",
                (want,)).fetchall():
            self.known[bytes(pub)] = _Coin(denom, units(spent), units(refunded), dirty=False)

    def get(self, pub, denom):
        pub = bytes(pub)
        coin = self.known.get(pub)
        if coin is None:
            coin = self.known[pub] = _Coin(denom)
        coin.dirty = True
        return coin

    def trim(self):
        """Bound memory on a large backlog: store and forget (same transaction)."""
        if len(self.known) > CACHE_LIMIT:
            self.write()
            self.known.clear()

    def write(self):
        rows = [(pub, c.denom, *divmod(c.spent, 100_000_000), *divmod(c.refunded, 100_000_000))
                for pub, c in self.known.items() if c.dirty]
        for c in self.known.values():
            c.dirty = False
        if not rows:
            return
        with self.aud.cursor() as cur:
            cur.executemany(
                """INSERT INTO auditor.auditor_coins
                     (coin_pub, denominations_serial, spent, refunded)
                   VALUES (%s, %s, ROW(%s, %s)::auditor.taler_amount,
                           ROW(%s, %s)::auditor.taler_amount)
                   ON CONFLICT (coin_pub) DO UPDATE SET spent = EXCLUDED.spent,
                     refunded = EXCLUDED.refunded""", rows)


def run(check):
    check.load_progress(PROGRESS_KEYS)
    for key in BALANCE_KEYS:
        check.add(key, 0)
    _withdrawals(check)
    _reveals(check)
    coins = _Coins(check.aud)
    for key, table, operation, query, fee_key in _CREDITS:
        _apply(check, coins, key, table, operation, query, fee_key,
               credit=True, forbidden_if_revoked=False, move_progress=(key != P_RECOUP_REFRESH))
    for key, table, operation, query, fee_key, forbidden in _SPENDS:
        _apply(check, coins, key, table, operation, query, fee_key,
               credit=False, forbidden_if_revoked=forbidden, move_progress=True)
    coins.write()
    _book_escrow(check)


def _book_escrow(check):
    """Spends of coins whose issue the audit never saw (e.g. collected before the
    first audit) would push the escrow below zero; that part is booked apart."""
    delta = check.balance_deltas.get(B_ESCROW, 0)
    if delta >= 0:
        return
    row = check.aud.execute(
        f"SELECT {num('balance_value')} FROM auditor.auditor_balances WHERE balance_key = %s",
        (B_ESCROW,)).fetchone()
    current = units(row[0]) if row else 0
    if current + delta < 0:
        short = -(current + delta)
        check.add(B_ESCROW, short)
        check.add(B_UNEXPLAINED, short)


def _withdrawals(check):
    for rows in check.stream(_WITHDRAWALS, {"p": check.next_serial(P_WITHDRAW),
                                                "hi": check.hi("reserves_out")}):
        for serial, executed, valid_from, expire_withdraw, value, h_denom, reserve_pub in rows:
            if value is None:
                continue     # the reserves check reports withdrawals of unknown denominations
            check.add(B_ESCROW, units(value))
            if not (valid_from <= executed < expire_withdraw):
                check.finding("denomination_key_validity_withdraw", problem_serial=serial,
                              execution_date=executed,
                              reserve_pub=None if reserve_pub is None else bytes(reserve_pub),
                              denom_pub_hash=bytes(h_denom))
        check.count("reserves_out", len(rows))
        check.processed(P_WITHDRAW, rows[-1][0])


def _reveals(check):
    for rows in check.stream(_REVEALS, {"p": check.next_serial(P_REVEAL),
                                            "hi": check.hi("refresh_revealed_coins")}):
        for serial, value in rows:
            if value is None:
                check.finding("row_inconsistency", row_table="refresh_revealed_coins",
                              problem_serial=serial,
                              diagnostic="fresh coin of an unknown denomination")
                continue
            check.add(B_ESCROW, units(value))
        check.count("refresh_revealed_coins", len(rows))
        check.processed(P_REVEAL, rows[-1][0])


def _apply(check, coins, key, table, operation, query, fee_key, credit,
           forbidden_if_revoked, move_progress):
    for rows in check.stream(query, {"p": check.next_serial(key), "hi": check.hi(table)}):
        coins.load(r[1] for r in rows)
        for serial, pub, amount, denom, value, fee, revoked, h_denom in rows:
            if pub is None or denom is None or value is None:
                if move_progress:
                    check.finding("row_inconsistency", row_table=table, problem_serial=serial,
                                  diagnostic=f"{operation} of an unknown coin or denomination")
                continue
            amount, value = units(amount), units(value)
            coin = coins.get(pub, denom)
            if fee_key:
                check.add(fee_key, units(fee) if fee is not None else amount)
            if credit:
                coin.refunded += amount
                check.add(B_ESCROW, amount)
                continue
            if forbidden_if_revoked and revoked:
                check.finding("revoked_denomination_spend", problem_table=table,
                              problem_serial=serial, coin_pub=bytes(pub),
                              denom_pub_hash=bytes(h_denom), amount=Units(amount))
            before = coin.spent - coin.refunded
            coin.spent += amount
            after = before + amount
            legit = min(amount, max(value - before, 0))
            check.add(B_ESCROW, -legit)
            if after > value:
                check.finding("coin_overspent", operation=operation, coin_pub=bytes(pub),
                              problem_table=table, problem_serial=serial,
                              exchange_amount=Units(after), auditor_amount=Units(value),
                              profitable=False)
                check.add(B_IRREGULAR_LOSS, amount - legit)
        if move_progress:
            check.count(table, len(rows))
            check.processed(key, rows[-1][0])
        coins.trim()

