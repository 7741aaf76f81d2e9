"""Spending coins: merchants' batch deposits (with refunds and policies), refreshes
(melt and reveal), recoups of revoked coins, and the aggregator wiring what
merchants are owed."""

from collections.abc import Sequence

from ..crypto import catalog, hashes
from .core import Due, ExchangeCore
from .entities import (ACCOUNT_SECTION, Coin, Denomination, Merchant, Reserve, deposit_confirmation,
                       payto_method)
from .units import CENT, DAY, HOUR, MARGIN, MINUTE, SECOND, UNIT, WEEK, A, canonical_json, hashcode


class Deposits(ExchangeCore):
    def write_coin(self, coin: Coin) -> None:
        """The coin's known_coins row, if the exchange has seen it (signed now if not yet)."""
        if coin.known_id is not None:
            if coin.sig is None and not self.signed:
                coin.sig = self.make_coin(coin.denom.key, coin.pub, b"", None).coin_sig
            if coin.sig is None:
                coin.sig = catalog.get("known_coins.denom_sig").sign(
                    {"coin_pub": coin.pub, "age_commitment_hash": coin.age_hash}, self.ctx,
                    coin.denom.key)
            if self.forge("known_coins.denom_sig"):
                # The denomination's real signature, on another coin.
                coin.sig = catalog.get("known_coins.denom_sig").sign(
                    {"coin_pub": self.rng.key32(), "age_commitment_hash": coin.age_hash},
                    self.ctx, coin.denom.key)
                self.forged["known_coins.denom_sig"] = coin.sig
            self.put("known_coins", coin.known_id, coin.denom.serial, coin.pub, coin.sig,
                     coin.age_hash, max(coin.remaining, 0))

    def batch_deposit(self, merchant: Merchant, t: int, coins_amounts: list[tuple[Coin, int]],
                      refund: bool = False, policy: str | None = None,
                      wire_delay: int | None = None,
                      pending: bool | None = None) -> tuple[int, list[int], int, int]:
        """A merchant's deposit of several coins for one contract.

        ``pending`` None: aggregated (done) iff its wire deadline passed before
        ``now``, as the bulk history wants; True: left for the caller's
        aggregator.  Returns (serial, coin deposit serials, net to wire, wire deadline).
        """
        rng = self.rng
        now = self.now
        serial = self.w.serial("batch_deposits")
        if wire_delay is None:
            wire_delay = rng.choice((DAY, 2 * DAY, 3 * DAY, WEEK, 2 * WEEK))
        wire_deadline = t + wire_delay
        refund_deadline = t + min(wire_delay, rng.choice((HOUR, DAY) if refund else (0, HOUR, DAY)))
        # What the wallet signs for each coin (the contract, the merchant's account).
        wallet_timestamp = t - rng.between(0, MINUTE)
        h_contract = rng.key64()
        wallet_data_hash = rng.key64() if rng.random() < 0.3 else None
        wire_salt = rng.randbytes(16)
        net = 0
        rows = []
        for coin, amount in coins_amounts:
            self.know(coin)
            coin.spent += amount
            if coin.spent >= coin.denom.value:
                coin.fully_spent_by_deposit = True
            net += amount - coin.denom.fee_deposit
            coin_sig = self.sign(
                "coin_deposits.coin_sig", coin.priv, h_contract_terms=h_contract,
                age_commitment_hash=coin.age_hash, payto_uri=merchant.payto, wire_salt=wire_salt,
                denom_pub_hash=coin.denom.h, wallet_timestamp=wallet_timestamp,
                refund_deadline=refund_deadline, amount_with_fee=A(amount),
                fee_deposit=A(coin.denom.fee_deposit), merchant_pub=merchant.pub,
                wallet_data_hash=wallet_data_hash)
            rows.append((self.w.serial("coin_deposits"), serial, coin.pub, coin_sig, amount))
        for row in rows:
            self.put("coin_deposits", *row)
        if self.confirmations is not None and serial % 8 == 0:
            self.confirmations.append(deposit_confirmation(
                serial, h_contract, hashes.merchant_wire_hash(merchant.payto, wire_salt), t,
                refund_deadline, wire_deadline, net, [r[2] for r in rows], [r[3] for r in rows],
                merchant.pub))
        policy_serial, blocked = None, False
        if policy is not None:
            policy_serial, blocked = self.policy(t, net, fulfilled=(policy == "fulfilled"))
        if refund and refund_deadline > t:
            coin, amount = coins_amounts[0]
            refund_at = t + rng.between(0, refund_deadline - t)
            give_back = (amount - coin.denom.fee_deposit) // 2 // CENT * CENT
            if amount >= UNIT and give_back >= CENT and (pending or refund_at < now - MINUTE):
                self.put("refunds", self.w.serial("refunds"), coin.pub, serial,
                         self.sign("refunds.merchant_sig", merchant.priv,
                                   h_contract_terms=h_contract, coin_pub=coin.pub,
                                   rtransaction_id=1, amount_with_fee=A(give_back)),
                         1, give_back)
                coin.spent -= give_back
                net -= give_back
        aggregate = False
        if pending is None:
            aggregate = wire_deadline < now - HOUR and not blocked
            if not aggregate and wire_deadline < now + MARGIN:
                wire_deadline = now + MARGIN + rng.between(0, WEEK)
            if aggregate:
                self.due.append((merchant, wire_deadline, serial, net))
        self.put("batch_deposits", serial, merchant.shard, merchant.pub,
                 wallet_timestamp, t, refund_deadline, wire_deadline, h_contract,
                 wallet_data_hash, wire_salt, merchant.h_payto, blocked, policy_serial,
                 self.sign("batch_deposits.merchant_sig", merchant.priv,
                           h_contract_terms=h_contract), aggregate)
        return serial, [row[0] for row in rows], net, wire_deadline

    def policy(self, t: int, amount: int, fulfilled: bool = True) -> tuple[int, bool]:
        """An escrow policy on a deposit; returns (policy_details serial, deposit blocked)."""
        rng = self.rng
        serial = self.w.serial("policy_details")
        code = rng.key32()
        proof_hash = None
        if fulfilled:
            proof = canonical_json({"escrow": "released", "ref": rng.getrandbits(32)})
            proof_hash = hashcode(proof)
            self.put("policy_fulfillments", self.w.serial("policy_fulfillments"), t + HOUR,
                     proof, proof_hash, [code])
        self.put("policy_details", serial, code,
                 canonical_json({"type": "escrowed_payment", "deadline_us": t + WEEK}), t + WEEK,
                 amount, amount, 0, amount if fulfilled else 0, 3 if fulfilled else 2,
                 proof_hash)
        return serial, not fulfilled

    def melt(self, coin: Coin, t: int, fresh_denoms_first: Sequence[Denomination] = ()
             ) -> list[tuple[Denomination, int, Coin]]:
        """Refresh the coin's remaining value into fresh coins; returns
        [(denom, rrc serial, fresh coin)]."""
        rng = self.rng
        self.know(coin)
        amount = coin.remaining
        melt = self.w.serial("refresh_commitments")
        rc = rng.key64()
        self.put("refresh_commitments", melt, rc, coin.pub,
                 self.sign("refresh_commitments.old_coin_sig", coin.priv, rc=rc,
                           denom_pub_hash=coin.denom.h, age_commitment_hash=coin.age_hash,
                           amount_with_fee=A(amount), fee_refresh=A(coin.denom.fee_refresh)),
                 amount, rng.randrange(3))
        coin.spent += amount
        if self.hooks is not None and self.hooks.hang_refresh(melt, amount):
            return []           # the reveal never comes
        budget = amount - coin.denom.fee_refresh
        fresh: list[Denomination] = []
        for d in list(fresh_denoms_first) + self.denoms:
            while budget >= d.cost and len(fresh) < 5:
                fresh.append(d)
                budget -= d.cost
                if d.revoked:
                    break
            if len(fresh) >= 5:
                break
        out = []
        _, transfer_pub = self.keypair()
        for i, d in enumerate(fresh):
            rrc = self.w.serial("refresh_revealed_coins")
            new = self.new_coin(d)
            planchet = self.make_coin(d.key, new.pub, new.bks, new.age_hash, melt=True)
            new.sig = planchet.coin_sig
            ev_sig = planchet.blind_sig
            if self.forge("refresh_revealed_coins.ev_sig"):
                # The denomination's blind signature of another planchet.
                ev_sig = d.key.make_coin(self.rng.key32(), self.rng.key32(), melt=True).blind_sig
                self.forged["refresh_revealed_coins.ev_sig"] = ev_sig
            self.put("refresh_revealed_coins", rrc, melt, i,
                     self.sign("refresh_revealed_coins.link_sig", coin.priv, denom_pub_hash=d.h,
                               transfer_pub=transfer_pub, coin_ev=planchet.coin_ev),
                     d.serial, planchet.coin_ev, None, ev_sig, planchet.ewv)
            out.append((d, rrc, new))
        self.put("refresh_transfer_keys", self.w.serial("refresh_transfer_keys"), melt,
                 transfer_pub, rng.randbytes(64))
        return out

    def recoup(self, coin: Coin, res: Reserve, t: int) -> None:
        self.know(coin)
        amount = coin.remaining
        self.put("recoup", self.w.serial("recoup"), coin.pub,
                 self.sign("recoup.coin_sig", coin.priv, denom_pub_hash=coin.denom.h,
                           coin_blind=coin.bks), coin.bks, amount, t, coin.withdraw_serial)
        coin.spent += amount
        self._credit(res, amount, t)

    def recoup_refresh(self, fresh: Coin, old: Coin, rrc: int, t: int) -> None:
        self.know(fresh)
        self.know(old)
        amount = fresh.remaining
        self.put("recoup_refresh", self.w.serial("recoup_refresh"), fresh.pub, old.known_id,
                 self.sign("recoup_refresh.coin_sig", fresh.priv, denom_pub_hash=fresh.denom.h,
                           coin_blind=fresh.bks), fresh.bks, amount, t, rrc)
        fresh.spent += amount
        old.spent -= amount

    def aggregate(self, due: list[Due] | None = None,
                  execution_at: int | None = None) -> list[tuple[int, list[Due]]]:
        """Wire each merchant's due deposits, one transfer per merchant and day."""
        rng = self.rng
        due = self.due if due is None else due
        groups: dict[tuple[bytes, int], list[Due]] = {}
        for merchant, deadline, serial, net in due:
            groups.setdefault((merchant.h_payto, deadline // DAY), []).append(
                (merchant, deadline, serial, net))
        plans = []
        for key in sorted(groups):
            items = groups[key]
            last = max(i[1] for i in items)
            if execution_at is not None:
                t = execution_at
            else:
                t = last + rng.between(SECOND, min(50 * MINUTE, self.now - last - SECOND))
            plans.append((t, key, items))
        plans.sort(key=lambda p: (p[0], p[1]))
        wired = []
        plant_at = len(plans) // 2      # a planted mismatch hides mid-batch
        for i, (t, _, items) in enumerate(plans):
            target = items[0][0]
            planted = None
            if self.hooks is not None and len(items) == 1:
                # sim/inject.py may send it elsewhere or too early (one aggregation row).
                planted, t, target = self.hooks.wire_out_plan(self, items[0], t)
            expected = sum(i[3] for i in items) - self.fees.wire_fee(t, payto_method(target.payto))
            if expected <= 0:
                raise AssertionError("aggregation below the wire fee; the model is inconsistent")
            wtid = rng.key32()
            serial = self.w.serial("wire_out")
            claimed = expected
            if self.hooks is not None and i == plant_at and planted is None:
                claimed = self.hooks.wire_out_amount(serial, expected)
            self.put("wire_out", serial, t, wtid, target.h_payto, ACCOUNT_SECTION, claimed)
            for _, _, batch, _ in sorted(items, key=lambda i: i[2]):
                row = self.w.serial("aggregation_tracking")
                self.put("aggregation_tracking", row, batch, wtid)
            if planted is not None and self.hooks is not None:
                self.hooks.wire_out_planted(planted, row, serial, items[0], t, target)
            wired.append((serial, items))
        if due is self.due:
            self.due = []
        return wired
