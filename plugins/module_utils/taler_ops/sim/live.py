"""The generator's live mode, the exchange at work: its state in memory between
transactions (reserves whose wallets still withdraw, coins with value left,
deposits the aggregator owes), the business of one step, the UPDATEs of
mutable columns it coalesces per transaction, and the denominations a run uses
(sim/generator.py paces the transactions)."""

from collections.abc import Callable
from typing import Any

import psycopg

from .entities import Coin, Denomination, Merchant, Reserve
from .exchange_model import Exchange
from .inject import Injector
from .units import (CENT, DAY, HOUR, IDLE_RESERVE_EXPIRATION, LEGAL_RESERVE_EXPIRATION, MARGIN,
                    SECOND, UNIT, YEAR)

# A deposit the aggregator will owe: (merchant, wire deadline, batch serial, net, shard).
PendingDeposit = tuple[Merchant, int, int, int, int]


class LiveExchange:
    """The exchange's state in memory while it serves traffic."""

    def __init__(self, conn: psycopg.Connection[Any], ex: Exchange, gc_every: float | None,
                 end_wall: int):
        self.conn = conn
        self.ex = ex
        self.rng = ex.rng
        self.reserves: list[Reserve] = []   # reserves whose wallet still withdraws
        self.plans: dict[bytes, list[Denomination]] = {}  # reserve_pub -> still to withdraw
        self.coins: list[Coin] = []         # coins with value left (known or not yet)
        self.spent: list[Coin] = []         # coins a deposit used up (for coin_overspend)
        self.pending: list[PendingDeposit] = []
        # table -> {row key: new value} (see _UPDATES)
        self.updates: dict[str, dict[Any, int]] = {
            "reserves": {}, "known_coins": {}, "batch_deposits": {}}
        self.gc_every = gc_every
        self.end_wall = end_wall

    # Mutable columns, coalesced per row until the transaction ends.
    def touch_reserve(self, res: Reserve) -> None:
        self.updates["reserves"][res.pub] = max(res.balance, 0) + res.balance_offset

    def touch_coin(self, coin: Coin) -> None:
        if coin.known_id is not None:
            self.updates["known_coins"][coin.pub] = max(coin.remaining, 0)

    def new_reserve(self, t: int, legal_gc: bool = False) -> Reserve:
        ex, rng = self.ex, self.rng
        res = ex.open_reserve(origin=ex.customer(t))
        usable = [d for d in ex.denoms if d.valid_from <= t < d.expire_withdraw]
        plan = [usable[min(len(usable) - 1, int(rng.random() ** 0.5 * len(usable)))]
                for _ in range(1 + int(rng.random() * 6))]
        # Some wallets leave change behind; the rest empty their reserve (GC fodder).
        leftover = rng.between(1, 100) * CENT if rng.random() < 0.3 else 0
        ex.credit_wire(res, sum(d.cost for d in plan) + leftover, t)
        res.expiration = t + IDLE_RESERVE_EXPIRATION
        res.gc_date = t + (int(self.gc_every * SECOND) if self.gc_every and not legal_gc
                           else LEGAL_RESERVE_EXPIRATION)
        ex.put("reserves", res.uuid, res.pub, res.expiration, res.gc_date, res.balance, 0, 0, 0)
        self.reserves.append(res)
        self.plans[res.pub] = plan
        return res

    def withdraw(self, t: int) -> Reserve:
        if not self.reserves:
            return self.new_reserve(t)
        rng = self.rng
        res = self.reserves[int(rng.random() * len(self.reserves))]
        plan = self.plans[res.pub]
        for _ in range(min(len(plan), 1 + int(rng.random() * 4))):
            self.coins.append(self.ex.withdraw(res, plan.pop(), t))
        self.touch_reserve(res)
        if not plan:
            self.reserves.remove(res)
            del self.plans[res.pub]
        return res

    def take_coins(self, n: int) -> list[Coin]:
        rng = self.rng
        return [self.coins.pop(int(rng.random() * len(self.coins)))
                for _ in range(min(n, len(self.coins)))]

    def deposit(self, t: int) -> Reserve | None:
        ex, rng = self.ex, self.rng
        paying = self.take_coins(1 + int(rng.random() * 3))
        if not paying:
            return self.withdraw(t)
        for coin in paying:
            if coin.known_id is None:     # first seen by the exchange now
                ex.know(coin)
                ex.write_coin(coin)
        # Short wire deadlines so the aggregator acts within the run; deposits
        # made too close to the end get deadlines a day past it.
        room = self.end_wall - t - SECOND // 2
        aggregate = room > SECOND // 2
        delay = (rng.between(SECOND // 5, min(8 * SECOND, room)) if aggregate
                 else self.end_wall - t + MARGIN + rng.between(0, DAY))
        amounts = [(c, c.remaining) for c in paying]
        melt = None
        last = paying[-1]
        if rng.random() < 0.1 and last.remaining >= UNIT:
            amounts[-1] = (last, max(last.remaining * 4 // 10 // CENT * CENT,
                                     last.denom.fee_deposit + CENT))
            melt = last
        merchant = ex.pick_merchant()
        batch, _, net, deadline = ex.batch_deposit(merchant, t, amounts,
                                                   refund=rng.random() < 0.03,
                                                   wire_delay=delay, pending=True)
        if aggregate:
            self.pending.append((merchant, deadline, batch, net, merchant.shard))
        if melt is not None:
            for _, _, coin in ex.melt(melt, t + SECOND):
                self.coins.append(coin)
        for coin in paying:
            self.touch_coin(coin)
            if coin.remaining == 0 and coin.fully_spent_by_deposit:
                self.spent = self.spent[-20:] + [coin]
        return None

    def aggregate(self, t: int) -> None:
        due = [p for p in self.pending if p[1] < t]
        if not due:
            return
        self.pending = [p for p in self.pending if p[1] >= t]
        shards = {p[2]: p[4] for p in due}
        wired = self.ex.aggregate([p[:4] for p in due], execution_at=t)
        for _, items in wired:
            for _, _, batch, _ in items:
                self.updates["batch_deposits"][batch] = shards[batch]
            # The transfer the exchange prepared (exchange-internal; GC removes it).
            self.ex.put("prewire", self.ex.w.serial("prewire"), "x-taler-bank", True, False,
                        self.rng.randbytes(64))

    def history(self, t: int) -> Reserve | None:
        if not self.reserves:
            return self.new_reserve(t)
        res = self.reserves[int(self.rng.random() * len(self.reserves))]
        fee = self.ex.fees.history_fee(t)
        if res.balance - sum(d.cost for d in self.plans[res.pub]) >= fee:
            self.ex.history_request(res, t)
            self.touch_reserve(res)
        return None

    def step(self, t: int) -> None:
        r = self.rng.random()
        if r < 0.15:
            self.new_reserve(t)
        elif r < 0.5:
            self.withdraw(t)
        elif r < 0.98:
            self.deposit(t)
        else:
            self.history(t)

    def inject(self, injector: Injector, t: int) -> None:
        """Plant what is still pending into this transaction's traffic."""
        ex = self.ex
        ex.hooks = injector          # the next aggregation takes wire_out_mismatch
        for kind in list(injector.pending):
            if kind == "reserve_balance_mismatch" and self.reserves:
                res = self.reserves.pop(0)     # no more activity: the record stays exact
                del self.plans[res.pub]
                injector.pending.remove(kind)
                res.balance_offset = UNIT
                self.touch_reserve(res)
                injector.reserve_written(res, max(res.balance, 0) + UNIT)
            elif kind == "coin_overspend" and self.spent:
                coin = self.spent.pop()
                injector.pending.remove(kind)
                _, serials, _, _ = ex.batch_deposit(
                    ex.pick_merchant(), t, [(coin, coin.denom.value)],
                    wire_delay=self.end_wall - t + MARGIN + DAY, pending=True)
                self.touch_coin(coin)
                injector.record_overspend(coin, serials[0])
            elif kind == "reserve_overdraft":
                # A reserve of its own, kept from GC, so the evidence stays.
                res = self.new_reserve(t, legal_gc=True)
                self.reserves.remove(res)
                del self.plans[res.pub]
                denom = ex.denoms[0]
                injector.pending.remove(kind)
                while True:         # withdraw until one withdrawal overdraws it
                    balance = res.balance
                    serial = ex.w.peek_serial("reserves_out")
                    coin = ex.withdraw(res, denom, t + SECOND)
                    if res.balance < 0:
                        break
                    self.coins.append(coin)
                self.touch_reserve(res)
                injector.record_overdraft(res, serial, balance, denom.cost)

    def write_updates(self) -> dict[str, int]:
        """The exchange's UPDATEs of this transaction, one statement per table."""
        counts = {}
        with self.conn.cursor() as cur:
            for table, (stmt, params) in _UPDATES.items():
                changed = self.updates[table]
                if changed:
                    cur.executemany(stmt, [params(key, value) for key, value in changed.items()])
                    counts[table] = len(changed)
        self.updates = {table: {} for table in _UPDATES}
        return counts


# table -> (statement, parameters from (key, new value)); amounts are split into
# (val, frac) here because executemany binds plain ints.
_UPDATES: dict[str, tuple[str, Callable[[Any, int], tuple[Any, ...]]]] = {
    "reserves": ("UPDATE exchange.reserves SET current_balance = "
                 "ROW(%s, %s)::exchange.taler_amount WHERE reserve_pub = %s",
                 lambda pub, v: (v // UNIT, v % UNIT, pub)),
    "known_coins": ("UPDATE exchange.known_coins SET remaining = "
                    "ROW(%s, %s)::exchange.taler_amount WHERE coin_pub = %s",
                    lambda pub, v: (v // UNIT, v % UNIT, pub)),
    "batch_deposits": ("UPDATE exchange.batch_deposits SET done = TRUE"
                       " WHERE batch_deposit_serial_id = %s AND shard = %s",
                       lambda serial, shard: (serial, shard)),
}


def live_denominations(ex: Exchange, conn: psycopg.Connection[Any], t_from: int,
                       t_to: int) -> list[Denomination]:
    """Withdrawable denominations for the run: the database's, or a new generation."""
    rows = conn.execute(
        """SELECT d.denominations_serial, (d.coin).val * 100000000 + (d.coin).frac,
                  (d.fee_withdraw).val * 100000000 + (d.fee_withdraw).frac,
                  (d.fee_deposit).val * 100000000 + (d.fee_deposit).frac,
                  (d.fee_refresh).val * 100000000 + (d.fee_refresh).frac,
                  (d.fee_refund).val * 100000000 + (d.fee_refund).frac,
                  d.age_mask, get_byte(d.denom_pub, 3), d.valid_from, d.expire_withdraw,
                  d.denom_pub
             FROM exchange.denominations d
            WHERE d.valid_from <= %s AND d.expire_withdraw > %s AND d.expire_deposit > %s
              AND NOT EXISTS (SELECT 1 FROM exchange.denomination_revocations r
                               WHERE r.denominations_serial = d.denominations_serial)
            ORDER BY d.denominations_serial""", (t_from, t_to, t_to + DAY)).fetchall()
    # Only denominations whose fees leave every deposit something to wire.  The
    # cipher is denom_pub's first field (Taler never writes denom_type: it stays 1).
    # Only denominations whose private key this run's keyring derives (an
    # earlier run with the same seed made them): their coins must verify.
    denoms = []
    for r in rows:
        if not (r[1] >= 10 * CENT and r[3] <= 2 * CENT and r[4] <= 2 * CENT):
            continue
        key = ex.keys.denomination(r[0], r[7] == 2, r[6])
        if key.denom_pub == bytes(r[10]):
            denoms.append(Denomination(r[0], r[1], r[2:6], False, r[6], r[7] == 2, r[8], r[9],
                                       key))
    if len({d.value for d in denoms if not d.age_mask}) >= 4:
        ex.add_denominations(denoms)
        return []
    made = ex.create_denominations(t_from - HOUR, t_to + YEAR, with_revoked=False)
    ex.create_auditors(t_from, made)
    return made

