"""What a bulk history is made of: the exchange's setup (key material, fees,
partners, merchants) and wallets' lives, each a reserve filled by wire whose
coins are withdrawn and spent (sim/generator.py runs them, chunk by chunk)."""

from typing import Any

import psycopg

from .entities import Denomination, Reserve
from .exchange_model import Exchange
from .inject import Injector
from .units import CENT, DAY, HISTORY_SPAN, HOUR, MINUTE, SECOND, UNIT, YEAR

# Rare business that every history must show at least once, planted in the
# first wallets' lives (which lie before the mid-window revocation).
FORCED = ("recoup", "recoup_refresh", "close_request", "history", "open", "p2p_local",
          "p2p_remote", "purse_expired", "wad_in", "refund", "policy", "policy_blocked",
          "melt", "kyc_customer")
PROBABILITY = {
    "recoup": 0.03, "recoup_refresh": 0.02, "close_request": 0.02, "history": 0.02,
    "open": 0.01, "p2p_local": 0.03, "p2p_remote": 0.01, "purse_expired": 0.005,
    "wad_in": 0.005, "refund": 0.04, "policy": 0.01, "policy_blocked": 0.003, "melt": 0.15,
    "kyc_customer": 0.03,
}


class Lifecycles:
    """Wallets' lives: a reserve filled by wire, its coins withdrawn and spent."""

    def __init__(self, ex: Exchange, injector: Injector | None):
        self.ex = ex
        self.rng = ex.rng
        self.injector = injector
        self.index = 0
        self.t_revoke = ex.now - HISTORY_SPAN // 2
        self.carry: set[str] = set()    # forced business a wallet could not do yet

    def features(self, t0: int) -> set[str]:
        rng = self.rng
        feats = {name for name, p in PROBABILITY.items() if rng.random() < p}
        if self.index < len(FORCED):
            feats.add(FORCED[self.index])
        feats |= self.carry
        if t0 >= self.t_revoke - 3 * DAY:
            feats -= {"recoup", "recoup_refresh"}
        self.index += 1
        return feats

    def plan(self, amount: int) -> list[Denomination]:
        """Coins a wallet asks for to withdraw ``amount`` (greedy, at most 12)."""
        coins: list[Denomination] = []
        rest = amount
        for d in self.ex.denoms:
            while rest >= d.cost and len(coins) < 12:
                coins.append(d)
                rest -= d.cost
        return coins or [self.ex.denoms[-1]]

    def wallet_amount(self) -> int:
        rng = self.rng
        r = rng.random()
        if r < 0.6:
            return rng.between(2, 20) * UNIT + rng.between(0, 100) * CENT
        if r < 0.95:
            return rng.between(20, 100) * UNIT
        return rng.between(100, 500) * UNIT

    def run(self, t0: int) -> None:
        ex, rng = self.ex, self.rng
        feats = self.features(t0)
        customer = ex.customer(t0, kyc="kyc_customer" in feats)
        feats.discard("kyc_customer")
        res = ex.open_reserve(origin=customer)
        plan = self.plan(self.wallet_amount())
        if "recoup_refresh" in feats and not any(d.value >= 2 * UNIT for d in plan):
            plan.append(next(d for d in ex.denoms if d.value == 2 * UNIT))
        if "recoup" in feats:
            plan.append(ex.revoked[0])
            feats.discard("recoup")
        if rng.random() < 0.15 and ex.age_denoms:
            plan.append(ex.age_denoms[int(rng.random() * len(ex.age_denoms))])
        leftover = 0
        if rng.random() < 0.3 or "close_request" in feats:
            leftover = rng.between(1, 200) * CENT
        history_fee = ex.fees.history_fee(t0) if "history" in feats else 0
        open_fee = ex.fees.account_fee(t0) if "open" in feats else 0
        ex.credit_wire(res, sum(d.cost for d in plan) + leftover + history_fee + open_fee, t0)

        t = t0 + rng.between(MINUTE, 10 * MINUTE)
        coins = [ex.withdraw(res, d, t + i * SECOND) for i, d in enumerate(plan)]
        made = list(coins)
        if history_fee:
            ex.history_request(res, t + 20 * MINUTE)
            feats.discard("history")
        revoked = [c for c in coins if c.denom.revoked]
        wallet = [c for c in coins if not c.denom.revoked]
        rng.shuffle(wallet)
        if open_fee:
            ex.open_request(res, t + 30 * MINUTE, open_fee)
            contributor = wallet.pop()
            ex.open_deposit(res, contributor, t + 31 * MINUTE, open_fee)
            feats.discard("open")
        if "close_request" in feats:
            ex.close_request(res, t + HOUR, customer[1])
            feats.discard("close_request")

        t_p = t + HOUR
        if "p2p_local" in feats and len(wallet) > 1:
            t_p += rng.between(MINUTE, HOUR)
            pub, amount, _ = ex.purse(wallet[:2], t_p)
            del wallet[:2]
            other = ex.merge_local(pub, amount, t_p + rng.between(MINUTE, DAY))
            feats.discard("p2p_local")
            self.spend_reserve(other, other.last_activity + 10 * MINUTE)
        if "p2p_remote" in feats and wallet:
            t_p += rng.between(MINUTE, HOUR)
            coin = wallet.pop()
            pub, amount, h_contract = ex.purse([coin], t_p)
            ex.merge_remote(pub, amount, h_contract, t_p + rng.between(MINUTE, HOUR),
                            coin.denom.fee_deposit)
            feats.discard("p2p_remote")
        if "purse_expired" in feats:
            ex.expired_purse(t_p)
            feats.discard("purse_expired")
        if "wad_in" in feats:
            feats.discard("wad_in")
            for other in ex.wad_in(t_p, rng.between(1, 4)):
                self.spend_reserve(other, t_p + rng.between(MINUTE, DAY))

        # Most coins stay in the wallet for a while; some are never spent here.
        keep = [c for c in wallet if rng.random() < 0.08]
        wallet = [c for c in wallet if c not in keep]
        # Paced so that a wallet's shopping ends within two days (before `now`).
        pace = max(20 * MINUTE, min(8 * HOUR, 2 * DAY // (len(wallet) + 1)))
        while wallet:
            t_p += rng.between(10 * MINUTE, pace)
            take = min(len(wallet), 1 + int(rng.random() * 3))
            paying, wallet = wallet[:take], wallet[take:]
            amounts = [(c, c.denom.value) for c in paying]
            melt = None
            last = paying[-1]
            want_rr = "recoup_refresh" in feats and last.denom.value >= 2 * UNIT
            if ("melt" in feats or rng.random() < 0.05 or want_rr) and last.denom.value >= UNIT:
                feats.discard("melt")
                share = rng.between(10, 60) if not want_rr else 10
                part = max(last.denom.value * share // 100 // CENT * CENT,
                           last.denom.fee_deposit + CENT)
                amounts[-1] = (last, part)
                melt = last
            merchant = ex.pick_merchant()
            policy = None
            if "policy" in feats:
                policy = "fulfilled"
                feats.discard("policy")
            elif "policy_blocked" in feats:
                policy = "blocked"
                feats.discard("policy_blocked")
            refunds = ex.w.added["refunds"]
            ex.batch_deposit(merchant, t_p, amounts,
                             refund="refund" in feats or rng.random() < 0.02, policy=policy)
            if ex.w.added["refunds"] > refunds:
                feats.discard("refund")
            if melt is not None:
                t_p += MINUTE
                fresh_first = (ex.revoked[0],) if want_rr else ()
                fresh = ex.melt(melt, t_p, fresh_first)
                spend_now = []
                for d, rrc, coin in fresh:
                    made.append(coin)
                    if d.revoked:
                        ex.recoup_refresh(coin, melt, rrc,
                                          self.t_revoke + rng.between(HOUR, 5 * DAY))
                        feats.discard("recoup_refresh")
                    elif rng.random() < 0.5:
                        spend_now.append(coin)
                if spend_now:
                    t_p += rng.between(MINUTE, HOUR)
                    ex.batch_deposit(ex.pick_merchant(), t_p,
                                     [(c, c.denom.value) for c in spend_now])
        for coin in revoked:
            ex.recoup(coin, res, self.t_revoke + rng.between(HOUR, 5 * DAY))
        del keep
        self.carry = feats & set(FORCED)
        if self.injector is not None:
            self.injector.after_lifecycle(ex, res, made, t_p)
        ex.finish_reserve(res)
        for coin in made:
            ex.write_coin(coin)

    def spend_reserve(self, res: Reserve, t: int) -> None:
        """A reserve credited by a merge or a wad: the wallet withdraws most of it."""
        ex = self.ex
        if self.rng.random() < 0.5:
            for i, d in enumerate(self.plan(res.balance)):
                if d.cost <= res.balance:
                    ex.withdraw(res, d, t + i * SECOND)
        ex.finish_reserve(res)


def setup_history(ex: Exchange, conn: psycopg.Connection[Any], t_start: int,
                  merchants: int) -> None:
    """Key material, fees, auditors, partners and the merchants of this run."""
    ex.load_fees(conn)
    ex.ensure_fees(t_start - YEAR, ex.now + YEAR)
    ex.ensure_extensions(conn)
    denoms = ex.create_denominations(t_start - 7 * DAY, ex.now + YEAR)
    ex.create_auditors(t_start, denoms)
    ex.create_sign_keys(t_start - 30 * DAY, ex.now + 60 * DAY)
    ex.create_partners(t_start)
    t = t_start + 10 * DAY
    while t < ex.now - DAY:
        ex.profit_drain(t)
        t += 30 * DAY
    for i in range(merchants):
        ex.new_merchant(t_start - DAY - i * HOUR)
