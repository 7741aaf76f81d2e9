"""Reserves: filled by wire transfers, emptied by withdrawals, history and open
requests, closed on request or when they expire with money left."""

from .accounts import Accounts
from .entities import ACCOUNT_SECTION, Coin, Customer, Denomination, Reserve, h_payto
from .units import (DAY, HOUR, IDLE_RESERVE_EXPIRATION, LEGAL_RESERVE_EXPIRATION, MARGIN, MINUTE,
                    WEEK, YEAR, A)


class Reserves(Accounts):
    def open_reserve(self, origin: Customer | None = None) -> Reserve:
        seed, pub = self.keypair()
        return Reserve(pub, self.w.serial("reserves"), origin, seed)

    def credit_wire(self, res: Reserve, amount: int, t: int) -> None:
        """reserves_in: the customer's bank transfer into the reserve."""
        assert res.origin is not None, "a reserve filled by wire knows the account it came from"
        self.put("reserves_in", self.w.serial("reserves_in"), res.pub,
                 self.next_wire_reference(), amount, res.origin[0], ACCOUNT_SECTION, t)
        self._credit(res, amount, t)

    def withdraw(self, res: Reserve, denom: Denomination, t: int) -> Coin:
        serial = self.w.serial("reserves_out")
        coin = self.new_coin(denom, serial)
        planchet = self.make_coin(denom.key, coin.pub, coin.bks, coin.age_hash)
        coin.sig = planchet.coin_sig
        self.put("reserves_out", serial, planchet.h_coin_ev, denom.serial, planchet.blind_sig,
                 res.uuid, self.sign("reserves_out.reserve_sig", res.priv,
                                     amount_with_fee=A(denom.cost), denom_pub_hash=denom.h,
                                     h_blind_ev=planchet.h_coin_ev), t, denom.cost)
        self._debit(res, denom.cost, t)
        return coin

    def history_request(self, res: Reserve, t: int) -> None:
        fee = self.fees.history_fee(t)
        self.put("history_requests", self.w.serial("history_requests"), res.pub, t,
                 self.rng.key64(), fee)
        self._debit(res, fee, t)

    def open_request(self, res: Reserve, t: int, payment: int) -> None:
        res.open_sig = self.sign("reserves_open_requests.reserve_sig", res.priv,
                                 reserve_payment=A(payment), request_timestamp=t,
                                 expiration_date=t + YEAR, requested_purse_limit=3)
        self.put("reserves_open_requests", self.w.serial("reserves_open_requests"), res.pub, t,
                 t + YEAR, res.open_sig, payment, 3)
        self._debit(res, payment, t)
        res.expiration = max(res.expiration or 0, t + YEAR)

    def open_deposit(self, res: Reserve, coin: Coin, t: int, contribution: int) -> None:
        """A coin paying towards opening a reserve (credit to the reserve; see economics.md)."""
        self.put("reserves_open_deposits", self.w.serial("reserves_open_deposits"),
                 res.open_sig, res.pub, coin.pub,
                 self.sign("reserves_open_deposits.coin_sig", coin.priv, reserve_sig=res.open_sig,
                           contribution=A(contribution)), contribution)
        self._credit(res, contribution, t)
        self.know(coin)

    def close_request(self, res: Reserve, t: int, payto: str) -> None:
        """The owner asks to close the reserve and have the balance wired to ``payto``."""
        fee = min(self.fees.closing_fee(t), res.balance)
        serial = self.w.serial("close_requests")
        self.put("close_requests", serial, res.pub, t,
                 self.sign("close_requests.reserve_sig", res.priv, close_timestamp=t,
                           close_h_payto=h_payto(payto), payto_uri=payto),
                 res.balance - fee, fee, payto, True)
        self.close(res, t + self.rng.between(MINUTE, HOUR), h_payto(payto), serial)

    def close(self, res: Reserve, t: int, target_h_payto: bytes, request_row: int = 0) -> None:
        fee = min(self.fees.closing_fee(t), res.balance)
        self.put("reserves_close", self.w.serial("reserves_close"), res.pub, t,
                 self.rng.key32(), target_h_payto, res.balance - fee, fee, request_row)
        self._debit(res, res.balance, t)
        res.closed = True

    def finish_reserve(self, res: Reserve) -> None:
        """Close what expired with money left, then write the reserve with its balance."""
        now = self.now
        expiration = max(res.expiration or 0, res.last_activity + IDLE_RESERVE_EXPIRATION)
        if res.balance > 0 and not res.closed:
            close_at = expiration + self.rng.between(MINUTE, HOUR)
            if close_at < now - MINUTE:
                if res.origin is not None:
                    self.close(res, close_at, res.origin[0])
                else:
                    # No incoming transfer to send it back to: the owner had to ask.
                    owner = self.customer(res.last_activity)
                    self.close_request(res, res.last_activity + DAY, owner[1])
            elif expiration < now + MARGIN:
                # Kept open (an "open" request or activity the model does not show).
                expiration = now + MARGIN + self.rng.between(0, WEEK)
        res.expiration = expiration
        gc_date = res.gc_date or res.last_activity + LEGAL_RESERVE_EXPIRATION
        stored = max(res.balance, 0) + res.balance_offset
        self.put("reserves", res.uuid, res.pub, expiration, gc_date, stored, 0, 0, 0)
        if self.hooks is not None:
            self.hooks.reserve_written(res, stored)
