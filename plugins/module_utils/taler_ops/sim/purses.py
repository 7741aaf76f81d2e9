"""Peer-to-peer payments: purses paid into by coins and merged into a reserve here
or at a partner exchange (a wad goes out), purses that expire unpaid, and
partners' wads crediting reserves here."""

from .entities import Coin, Reserve, h_normalized_payto
from .reserves import Reserves
from .units import CENT, DAY, HOUR, MINUTE, SECOND, UNIT, WEEK, A


class Purses(Reserves):
    def purse(self, coins: list[Coin], t: int, partner: int | None = None,
              unpaid: int = 0) -> tuple[bytes, int, bytes]:
        """A p2p push payment: coins into a purse; returns (purse_pub, amount, h_contract).

        ``unpaid`` (sim/inject.py only): the purse asks for that much more than the coins pay.
        """
        rng = self.rng
        seed, pub = self.keypair()
        merge_seed, merge_pub = self.keypair()
        h_contract = rng.key64()
        amount = sum(c.denom.value - c.denom.fee_deposit for c in coins) + unpaid
        partner_url = None
        if partner is not None:
            partner_url = next(p[1] for p in self.partners if p[0] == partner)
        rows = []
        for coin in coins:
            self.know(coin)
            coin.spent += coin.denom.value
            rows.append((self.w.serial("purse_deposits"), partner, pub, coin.pub,
                         coin.denom.value,
                         self.sign("purse_deposits.coin_sig", coin.priv,
                                   amount_with_fee=A(coin.denom.value),
                                   denom_pub_hash=coin.denom.h,
                                   age_commitment_hash=coin.age_hash, purse_pub=pub,
                                   partner_serial_id=partner, partner_base_url=partner_url)))
        self.put("purse_requests", self.w.serial("purse_requests"), pub, merge_pub, t,
                 t + WEEK, h_contract, 0, 0, amount, 0,
                 self.purse_sig(seed, pub, merge_seed, merge_pub, t + WEEK, amount, h_contract),
                 False, True, amount)
        for row in rows:
            self.put("purse_deposits", *row)
        return pub, amount, h_contract

    def purse_sig(self, seed: bytes, pub: bytes, merge_seed: bytes, merge_pub: bytes,
                  expiration: int, amount: int, h_contract: bytes, age_limit: int = 0,
                  flags: int = 0, purse_fee: int = 0) -> bytes:
        """purse_requests.purse_sig; remembers what the purse's merges sign."""
        self.purses[pub] = {"merge_seed": merge_seed, "merge_pub": merge_pub,
                            "purse_expiration": expiration, "amount_with_fee": A(amount),
                            "purse_fee": A(purse_fee), "h_contract_terms": h_contract,
                            "age_limit": age_limit, "flags": flags}
        return self.sign("purse_requests.purse_sig", seed, purse_expiration=expiration,
                         amount_with_fee=A(amount), h_contract_terms=h_contract,
                         merge_pub=merge_pub, age_limit=age_limit)

    def merge_sig(self, purse_pub: bytes, reserve_pub: bytes, t: int,
                  partner: int | None = None) -> bytes:
        """purse_merges.merge_sig of a merge into ``reserve_pub`` at time ``t``."""
        url = next(p[1] for p in self.partners if p[0] == partner) if partner else None
        return self.sign("purse_merges.merge_sig", self.purses[purse_pub]["merge_seed"],
                         merge_timestamp=t, purse_pub=purse_pub, reserve_pub=reserve_pub,
                         partner_serial_id=partner, partner_base_url=url)

    def expired_purse(self, t: int, decided: bool | None = None) -> int:
        """A purse nobody paid into; decided (refunded, nothing to refund) once expired
        (``decided`` False: never, sim/inject.py only).  Returns its purse_requests serial."""
        rng = self.rng
        seed, pub = self.keypair()
        merge_seed, merge_pub = self.keypair()
        expiration = t + DAY
        if decided is None:
            decided = expiration + HOUR < self.now
        serial = self.w.peek_serial("purse_requests")
        h_contract = rng.key64()
        amount = rng.between(1, 20) * UNIT
        self.put("purse_requests", self.w.serial("purse_requests"), pub, merge_pub, t,
                 expiration, h_contract, 0, 0, amount, 0,
                 self.purse_sig(seed, pub, merge_seed, merge_pub, expiration, amount, h_contract),
                 False, decided, 0)
        if decided:
            self.put("purse_decision", self.w.serial("purse_decision"), pub,
                     expiration + rng.between(SECOND, HOUR), True)
        return serial

    def merge_local(self, purse_pub: bytes, amount: int, t: int) -> Reserve:
        """The purse merged into a new reserve of this exchange."""
        res = self.open_reserve()
        self.put("purse_merges", self.w.serial("purse_merges"), None, res.pub, purse_pub,
                 self.merge_sig(purse_pub, res.pub, t), t)
        wallet_payto = f"payto://taler-reserve/exchange.demo.taler.net/{res.pub.hex()}"
        p = self.purses[purse_pub]
        self.put("account_merges", self.w.serial("account_merges"), res.pub,
                 self.sign("account_merges.reserve_sig", res.priv,
                           purse_expiration=p["purse_expiration"],
                           amount_with_fee=p["amount_with_fee"], purse_fee=p["purse_fee"],
                           h_contract_terms=p["h_contract_terms"], purse_pub=purse_pub,
                           merge_timestamp=t, age_limit=p["age_limit"], flags=p["flags"]),
                 purse_pub, h_normalized_payto(wallet_payto))
        self.put("purse_decision", self.w.serial("purse_decision"), purse_pub, t, False)
        self._credit(res, amount, t)
        return res

    def merge_remote(self, purse_pub: bytes, amount: int, h_contract: bytes, t: int,
                     deposit_fees: int) -> None:
        """The purse merged into a reserve at a partner exchange: a wad goes out."""
        rng = self.rng
        serial, _, wad_fee = self.partners[int(rng.random() * len(self.partners))]
        remote_reserve = rng.key32()
        self.put("purse_merges", self.w.serial("purse_merges"), serial, remote_reserve,
                 purse_pub, self.merge_sig(purse_pub, remote_reserve, t, serial), t)
        self.put("purse_decision", self.w.serial("purse_decision"), purse_pub, t, False)
        wad = self.w.serial("wads_out")
        wad_time = t + rng.between(MINUTE, HOUR)
        self.put("wads_out", wad, rng.randbytes(24), serial, max(amount - wad_fee, 0), wad_time)
        self.put("wad_out_entries", self.w.serial("wad_out_entries"), wad, remote_reserve,
                 purse_pub, h_contract, t + WEEK, t, amount, wad_fee, deposit_fees,
                 rng.key64(), rng.key64())

    def wad_in(self, t: int, n_entries: int) -> list[Reserve]:
        """A partner exchange's wad crediting new reserves here; returns the reserves."""
        rng = self.rng
        _, url, wad_fee = self.partners[int(rng.random() * len(self.partners))]
        wad = self.w.serial("wads_in")
        reserves, entries, total = [], [], 0
        for _ in range(n_entries):
            res = self.open_reserve()
            amount = rng.between(1, 30) * UNIT + rng.between(0, 100) * CENT
            entries.append((self.w.serial("wad_in_entries"), wad, res.pub, rng.key32(),
                            rng.key64(), t + WEEK, t - HOUR, amount, wad_fee, 2 * CENT,
                            rng.key64(), rng.key64()))
            self._credit(res, amount, t)
            reserves.append(res)
            total += amount
        self.put("wads_in", wad, rng.randbytes(24), url, total, t)
        for row in entries:
            self.put("wad_in_entries", *row)
        return reserves
