"""The coins check (docs/economics.md, rules C1-C3) and the escrow balance.

Per coin, taler_ops.audit_coins (taler-ops' own table in the auditor database:
Taler has none for it) keeps the gross amount spent (deposits, melts, recoups,
recoup-refreshes, purse deposits) and the gross amount given back (refunds,
recoup-refreshes into the old coin); spent - refunded must never exceed the
denomination's value.  Per denomination, Taler's auditor_denomination_pending
keeps what is outstanding (denom_balance), issued (num_issued, denom_risk), lost
to overspending (denom_loss) and paid out by recoups (recoup_loss).

Spends carry no common timestamp (melts have none at all), so one increment
is applied in a fixed order: what gives value back first, then recoups,
recoup-refreshes, melts, purse deposits and deposits last, each table in
serial order.  When the new spends of a coin together exceed its value, the
finding therefore names the latest deposit where one is involved, the way an
over-spending wallet would have run into the exchange's check.

Withdrawals (reserves_out) are checked against their denomination's validity
window (C3) and, with fresh coins from refresh reveals, raise the escrow.
"""

from collections.abc import Iterable

from .common import REVOKED_SPEND, Check, Conn, Units, num, split, text_amount, units
from .coins_checks import BALANCE_KEYS as CHECKS_BALANCE_KEYS
from .coins_checks import denominations_without_sigs, emergencies, refreshes_hanging
from ..schema.auditor_schema import AUDIT_COINS

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
P_PURSE_REFUND = "coins_purse_refunds_serial_id"
PROGRESS_KEYS = (P_WITHDRAW, P_REVEAL, P_REFUND, P_RECOUP, P_RECOUP_REFRESH, P_MELT,
                 P_PURSE, P_DEPOSIT, P_PURSE_REFUND)

# Taler's coins helper's balance keys; the last one is taler-ops' own (docs/audit.md).
B_ESCROW = "total_escrowed"
B_IRREGULAR_LOSS = "coin_irregular_loss"
B_DEPOSIT_FEE = "coin_deposit_fee_revenue"
B_MELT_FEE = "coin_melt_fee_revenue"
B_REFUND_FEE = "coin_refund_fee_revenue"
B_RECOUP_LOSS = "total_recoup_loss"
B_UNEXPLAINED = "coins_escrow_unexplained"
BALANCE_KEYS = (B_ESCROW, B_IRREGULAR_LOSS, B_DEPOSIT_FEE, B_MELT_FEE, B_REFUND_FEE,
                B_RECOUP_LOSS, B_UNEXPLAINED) + CHECKS_BALANCE_KEYS

# Each coin-side query yields (serial, coin_pub, amount, denominations_serial, value,
# fee, revoked, denom_pub_hash) for the coin the row spends or credits.
_COIN = f"""kc.denominations_serial, {num('d.coin')}, {{fee}},
       EXISTS (SELECT 1 FROM exchange.denomination_revocations dr
                WHERE dr.denominations_serial = kc.denominations_serial),
       d.denom_pub_hash"""


def _coin_query(select: str, table_sql: str, coin_join: str, where: str,
                fee: str = "NULL::numeric") -> str:
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
    # A purse decided as refunded (expired unmerged) gives each coin deposited into it
    # its amount_with_fee back, as the exchange's expire_purse and Taler's coins helper
    # (purse_refund_cb) do; one row per purse deposit, keyed by the decision's serial.
    (P_PURSE_REFUND, "purse_decision", "purse-refund",
     _coin_query(f"t.purse_decision_serial_id, pdep.coin_pub, {num('pdep.amount_with_fee')}",
                 "exchange.purse_decision t JOIN exchange.purse_deposits pdep "
                 "ON pdep.purse_pub = t.purse_pub AND t.refunded",
                 "kc.coin_pub = pdep.coin_pub",
                 "t.purse_decision_serial_id BETWEEN %(p)s AND %(hi)s"), None),
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
SELECT rrc.rrc_serial, {num('d.coin')}, d.denom_pub_hash
  FROM exchange.refresh_revealed_coins rrc
  LEFT JOIN exchange.denominations d ON d.denominations_serial = rrc.denominations_serial
 WHERE rrc.rrc_serial BETWEEN %(p)s AND %(hi)s ORDER BY 1"""


class _Coin:
    __slots__ = ("denom", "spent", "refunded", "dirty")

    def __init__(self, denom: int, spent: int = 0, refunded: int = 0, dirty: bool = True) -> None:
        self.denom, self.spent, self.refunded, self.dirty = denom, spent, refunded, dirty


class _Coins:
    def __init__(self, aud: Conn) -> None:
        self.aud = aud
        self.known: dict[bytes, _Coin] = {}

    def load(self, pubs: Iterable[bytes | None]) -> None:
        want = [bytes(p) for p in set(pubs) if p is not None and bytes(p) not in self.known]
        if not want:
            return
        for pub, denom, spent, refunded in self.aud.execute(
                f"""SELECT coin_pub, denominations_serial, spent, refunded
                      FROM {AUDIT_COINS} WHERE coin_pub = ANY(%s)""",
                (want,)).fetchall():
            self.known[bytes(pub)] = _Coin(denom, units(spent), units(refunded), dirty=False)

    def get(self, pub: bytes, denom: int) -> _Coin:
        pub = bytes(pub)
        coin = self.known.get(pub)
        if coin is None:
            coin = self.known[pub] = _Coin(denom)
        coin.dirty = True
        return coin

    def trim(self) -> None:
        """Bound memory on a large backlog: store and forget (same transaction)."""
        if len(self.known) > CACHE_LIMIT:
            self.write()
            self.known.clear()

    def write(self) -> None:
        rows = [(pub, c.denom, c.spent, c.refunded)
                for pub, c in self.known.items() if c.dirty]
        for c in self.known.values():
            c.dirty = False
        if not rows:
            return
        with self.aud.cursor() as cur:
            cur.executemany(
                f"""INSERT INTO {AUDIT_COINS} (coin_pub, denominations_serial, spent, refunded)
                   VALUES (%s, %s, %s, %s)
                   ON CONFLICT (coin_pub) DO UPDATE SET spent = EXCLUDED.spent,
                     refunded = EXCLUDED.refunded""", rows)


class _Denom:
    __slots__ = ("balance", "loss", "issued", "risk", "recoup_loss")

    def __init__(self, balance: int = 0, loss: int = 0, issued: int = 0, risk: int = 0,
                 recoup_loss: int = 0) -> None:
        self.balance, self.loss, self.issued = balance, loss, issued
        self.risk, self.recoup_loss = risk, recoup_loss


class _Denoms:
    """Taler's auditor_denomination_pending, per denomination touched in this increment.

    Few denominations exist, so all touched ones stay in memory until the write.
    """

    def __init__(self, aud: Conn) -> None:
        self.aud = aud
        self.known: dict[bytes, _Denom] = {}

    def get(self, h_denom: bytes) -> _Denom:
        h = bytes(h_denom)
        d = self.known.get(h)
        if d is None:
            row = self.aud.execute(
                f"""SELECT {num('denom_balance')}, {num('denom_loss')}, num_issued,
                           {num('denom_risk')}, {num('recoup_loss')}
                      FROM auditor.auditor_denomination_pending WHERE denom_pub_hash = %s""",
                (h,)).fetchone()
            d = self.known[h] = (_Denom(units(row[0]), units(row[1]), row[2], units(row[3]),
                                        units(row[4])) if row else _Denom())
        return d

    def write(self) -> None:
        rows = [(h, *split(max(d.balance, 0)), *split(d.loss), d.issued, *split(d.risk),
                 *split(d.recoup_loss)) for h, d in self.known.items()]
        if not rows:
            return
        amount = "ROW(%s, %s)::auditor.taler_amount"
        with self.aud.cursor() as cur:
            cur.executemany(
                f"""INSERT INTO auditor.auditor_denomination_pending
                     (denom_pub_hash, denom_balance, denom_loss, num_issued, denom_risk,
                      recoup_loss)
                   VALUES (%s, {amount}, {amount}, %s, {amount}, {amount})
                   ON CONFLICT (denom_pub_hash) DO UPDATE SET
                     denom_balance = EXCLUDED.denom_balance, denom_loss = EXCLUDED.denom_loss,
                     num_issued = EXCLUDED.num_issued, denom_risk = EXCLUDED.denom_risk,
                     recoup_loss = EXCLUDED.recoup_loss""", rows)


def run(check: Check) -> None:
    check.load_progress(PROGRESS_KEYS)
    for key in BALANCE_KEYS:
        check.add(key, 0)
    denoms = _Denoms(check.aud)
    _withdrawals(check, denoms)
    _reveals(check, denoms)
    # Before the melt pass moves its progress point: the same melts.
    refreshes_hanging(check, check.next_serial(P_MELT))
    coins = _Coins(check.aud)
    for key, table, operation, query, fee_key in _CREDITS:
        _apply(check, coins, denoms, key, table, operation, query, fee_key,
               credit=True, forbidden_if_revoked=False, move_progress=(key != P_RECOUP_REFRESH))
    for key, table, operation, query, fee_key, forbidden in _SPENDS:
        _apply(check, coins, denoms, key, table, operation, query, fee_key,
               credit=False, forbidden_if_revoked=forbidden, move_progress=True)
    coins.write()
    emergencies(check, denoms.known)
    denoms.write()
    denominations_without_sigs(check)
    _book_escrow(check)


def _book_escrow(check: Check) -> None:
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


def _issued(denoms: _Denoms, h_denom: bytes, value: int) -> None:
    d = denoms.get(h_denom)
    d.issued += 1
    d.balance += value
    d.risk += value


def _withdrawals(check: Check, denoms: _Denoms) -> None:
    for rows in check.stream(_WITHDRAWALS, {"p": check.next_serial(P_WITHDRAW),
                                                "hi": check.hi("reserves_out")}):
        for serial, executed, valid_from, expire_withdraw, value, h_denom, reserve_pub in rows:
            if value is None:
                continue     # the reserves check reports withdrawals of unknown denominations
            check.add(B_ESCROW, units(value))
            _issued(denoms, h_denom, units(value))
            # Without its reserve the reserves check reports the row; Taler's table
            # needs the reserve_pub.
            # Taler's bounds are inclusive: valid at valid_from and at expire_withdraw.
            if not (valid_from <= executed <= expire_withdraw) and reserve_pub is not None:
                check.finding("denomination_key_validity_withdraw", problem_row_id=serial,
                              execution_date=executed, reserve_pub=bytes(reserve_pub),
                              denompub_h=bytes(h_denom))
        check.count("reserves_out", len(rows))
        check.processed(P_WITHDRAW, rows[-1][0])


def _reveals(check: Check, denoms: _Denoms) -> None:
    for rows in check.stream(_REVEALS, {"p": check.next_serial(P_REVEAL),
                                            "hi": check.hi("refresh_revealed_coins")}):
        for serial, value, h_denom in rows:
            if value is None:
                check.finding("row_inconsistency", row_table="refresh_revealed_coins",
                              problem_row_id=serial,
                              diagnostic="fresh coin of an unknown denomination")
                continue
            check.add(B_ESCROW, units(value))
            _issued(denoms, h_denom, units(value))
        check.count("refresh_revealed_coins", len(rows))
        check.processed(P_REVEAL, rows[-1][0])


def _apply(check: Check, coins: _Coins, denoms: _Denoms, key: str, table: str, operation: str,
           query: str, fee_key: str | None, credit: bool, forbidden_if_revoked: bool,
           move_progress: bool) -> None:
    for rows in check.stream(query, {"p": check.next_serial(key), "hi": check.hi(table)}):
        coins.load(r[1] for r in rows)
        for serial, pub, amount, denom, value, fee, revoked, h_denom in rows:
            if pub is None or denom is None or value is None:
                if move_progress:
                    check.finding("row_inconsistency", row_table=table, problem_row_id=serial,
                                  diagnostic=f"{operation} of an unknown coin or denomination")
                continue
            amount, value = units(amount), units(value)
            coin = coins.get(pub, denom)
            pending = denoms.get(h_denom)
            if fee_key:
                check.add(fee_key, units(fee) if fee is not None else amount)
            if credit:
                coin.refunded += amount
                pending.balance += amount
                check.add(B_ESCROW, amount)
                continue
            if forbidden_if_revoked and revoked:
                check.finding("revoked_denomination_spend", row_table=table,
                              problem_row_id=serial,
                              diagnostic=f"{REVOKED_SPEND}: coin {bytes(pub).hex()}, "
                                         f"{operation} of {text_amount(amount, check.currency)}")
            if fee_key == B_RECOUP_LOSS:
                pending.recoup_loss += amount
            if table in ("recoup", "recoup_refresh") and not revoked:
                # A recoup is only for revoked denominations.  Taler's coins helper
                # (check_recoup) records one of a denomination never revoked in
                # auditor_bad_sig_losses (operation "recoup" / "recoup-refresh", the
                # coin as operation_specific_pub) and books it as irregular loss; for a
                # recoup into a reserve the reserves check also reports the row.
                check.finding("bad_sig_loss", operation=operation, problem_row_id=serial,
                              loss=Units(amount), operation_specific_pub=bytes(pub))
                check.add(B_IRREGULAR_LOSS, amount)
            before = coin.spent - coin.refunded
            coin.spent += amount
            after = before + amount
            legit = min(amount, max(value - before, 0))
            check.add(B_ESCROW, -legit)
            # Taler's reduce_denom_balance: the whole amount comes out of what the
            # denomination has outstanding; what that cannot cover is a loss on the
            # denomination, an emergency (audit_coins_checks.emergencies).
            if pending.balance >= amount:
                pending.balance -= amount
            else:
                pending.loss += amount
            if after > value:
                # Taler's table names the coin and the operation, not the row.
                check.finding("coin_overspent", operation=operation, coin_pub=bytes(pub),
                              exchange_amount=Units(after), auditor_amount=Units(value),
                              profitable=False, _table=table, _serial=serial)
                check.add(B_IRREGULAR_LOSS, amount - legit)
        if move_progress:
            check.count(table, len({r[0] for r in rows}))   # purse refunds: per decision
            check.processed(key, rows[-1][0])
        coins.trim()

