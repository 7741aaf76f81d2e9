"""The exchange's key material and fees: denominations (one to be revoked), the
auditors' signatures on them, online signing keys, wire and global fees, the
extensions it offers, its partner exchanges and its profit drains."""

from typing import Any

import psycopg

from ..crypto.mint import DenominationKey
from .core import ExchangeCore
from .entities import ACCOUNT_SECTION, WIRE_METHODS, Denomination, DenomTerms
from .units import CENT, DAY, FEE_PERIOD, HOUR, UNIT, YEAR, A, canonical_json

AGE_MASK = (1 << 8) | (1 << 10) | (1 << 12) | (1 << 14) | (1 << 16) | (1 << 18) | (1 << 21)
EXTENSIONS = {
    "age_restriction": {"critical": False, "version": "1",
                        "config": {"age_groups": "8:10:12:14:16:18:21"}},
    "policy_merchant_refund": {"critical": False, "version": "1", "config": {}},
    "policy_brandt_vickrey_auction": {"critical": False, "version": "0", "config": {}},
}


def wire_fee_of_period(k: int) -> tuple[int, int]:
    """The fee the model's exchange sets for fee year k (deterministic, seed-independent)."""
    return 1 * CENT + (k % 3) * CENT, 1 * CENT + (k % 2) * CENT


def global_fee_of_period(k: int) -> tuple[int, int, int]:
    # history_fee, account_fee, purse_fee
    return 1 * CENT, 2 * CENT + (k % 2) * CENT, 0


def denom_terms(key: DenominationKey, valid_from: int, expire_withdraw: int,
                expire_deposit: int, expire_legal: int, value: int,
                fees: tuple[int, int, int, int]) -> DenomTerms:
    """A denomination's signed terms, as catalog rows name them."""
    return {"valid_from": valid_from, "expire_withdraw": expire_withdraw,
            "expire_deposit": expire_deposit, "expire_legal": expire_legal, "coin": A(value),
            "fee_withdraw": A(fees[0]), "fee_deposit": A(fees[1]), "fee_refresh": A(fees[2]),
            "fee_refund": A(fees[3]), "denom_pub": key.denom_pub}


class KeyMaterial(ExchangeCore):
    def load_fees(self, conn: psycopg.Connection[Any]) -> None:
        for method, start, end, wire_fee, closing_fee in conn.execute(
                "SELECT wire_method, start_date, end_date, "
                "(wire_fee).val * 100000000 + (wire_fee).frac, "
                "(closing_fee).val * 100000000 + (closing_fee).frac "
                "FROM exchange.wire_fee ORDER BY start_date"):
            self.fees.wire.setdefault(method, []).append((start, end, wire_fee, closing_fee))
        for start, end, history_fee, account_fee in conn.execute(
                "SELECT start_date, end_date, "
                "(history_fee).val * 100000000 + (history_fee).frac, "
                "(account_fee).val * 100000000 + (account_fee).frac "
                "FROM exchange.global_fee ORDER BY start_date"):
            self.fees.glob.append((start, end, history_fee, account_fee))
        # Both kinds of incoming transfer draw from one counter of bank transfer ids.
        row = conn.execute(
            "SELECT GREATEST((SELECT COALESCE(max(wire_reference), 0) FROM exchange.reserves_in),"
            " (SELECT COALESCE(max(wire_reference), 0) FROM exchange.kycauths_in))").fetchone()
        assert row is not None, "an aggregate returns one row"
        self.wire_reference = row[0]

    def ensure_fees(self, t_from: int, t_to: int) -> None:
        """Fee rows for every fee year touching [t_from, t_to] that no row covers yet."""
        for k in range(t_from // FEE_PERIOD, t_to // FEE_PERIOD + 1):
            start, end = k * FEE_PERIOD, (k + 1) * FEE_PERIOD
            for method in WIRE_METHODS:
                rows = self.fees.wire[method]
                if any(r[0] < end and start < r[1] for r in rows):
                    continue
                wire_fee, closing_fee = wire_fee_of_period(k)
                self.put("wire_fee", self.w.serial("wire_fee"), method, start, end, wire_fee,
                         closing_fee, self.master_sign(
                             "wire_fee.master_sig", wire_method=method, start_date=start,
                             end_date=end, wire_fee=A(wire_fee), closing_fee=A(closing_fee)))
                rows.append((start, end, wire_fee, closing_fee))
                rows.sort()
            if not any(r[0] < end and start < r[1] for r in self.fees.glob):
                history_fee, account_fee, purse_fee = global_fee_of_period(k)
                self.put("global_fee", self.w.serial("global_fee"), start, end, history_fee,
                         account_fee, purse_fee, 30 * DAY, YEAR, 5, self.master_sign(
                             "global_fee.master_sig", start_date=start, end_date=end,
                             purse_timeout=30 * DAY, history_expiration=YEAR,
                             history_fee=A(history_fee), account_fee=A(account_fee),
                             purse_fee=A(purse_fee), purse_account_limit=5))
                self.fees.glob.append((start, end, history_fee, account_fee))
                self.fees.glob.sort()

    def ensure_extensions(self, conn: psycopg.Connection[Any]) -> None:
        have = {r[0] for r in conn.execute("SELECT name FROM exchange.extensions")}
        for name in sorted(EXTENSIONS):
            if name not in have:
                self.put("extensions", self.w.serial("extensions"), name,
                         canonical_json(EXTENSIONS[name]).encode())

    def create_denominations(self, valid_from: int, expire_withdraw: int,
                             with_revoked: bool = True) -> list[Denomination]:
        """One key generation: eight coin values, two age-restricted, one to be revoked."""
        values = [10 * CENT, 50 * CENT, 1 * UNIT, 2 * UNIT, 5 * UNIT, 10 * UNIT, 20 * UNIT,
                  50 * UNIT]
        specs = [(v, 0, v in (50 * CENT, 2 * UNIT), False) for v in values]
        specs += [(1 * UNIT, AGE_MASK, False, False), (5 * UNIT, AGE_MASK, False, False)]
        if with_revoked:
            specs.append((1 * UNIT, 0, False, True))
        expire_deposit = expire_withdraw + 2 * YEAR
        expire_legal = expire_deposit + 6 * YEAR
        made = []
        for value, age_mask, cs, revoked in specs:
            fees = (CENT if value < 5 * UNIT else 2 * CENT,
                    CENT if value < 10 * UNIT else 2 * CENT, CENT, CENT)
            serial = self.w.serial("denominations")
            key = self.keys.denomination(serial, cs, age_mask)
            terms = denom_terms(key, valid_from, expire_withdraw, expire_deposit, expire_legal,
                                value, fees)
            # denom_type keeps Taler's default 1 even for CS: the exchange never
            # writes it; the cipher is in denom_pub.
            self.put("denominations", serial, None, 1, age_mask, key.denom_pub,
                     self.master_sign("denominations.master_sig", **terms),
                     valid_from, expire_withdraw, expire_deposit, expire_legal, value, *fees)
            d = Denomination(serial, value, fees, revoked, age_mask, cs, valid_from,
                             expire_withdraw, key)
            self.denom_terms[serial] = terms
            made.append(d)
            if revoked:
                self.put("denomination_revocations",
                         self.w.serial("denomination_revocations"), serial,
                         self.master_sign("denomination_revocations.master_sig",
                                          denom_pub_hash=key.denom_pub_hash))
        self.add_denominations(made)
        return made

    def add_denominations(self, denoms: list[Denomination]) -> None:
        self.all_denoms += denoms
        self.revoked += [d for d in denoms if d.revoked]
        self.age_denoms += [d for d in denoms if d.age_mask and not d.revoked]
        self.denoms += [d for d in denoms if not d.age_mask and not d.revoked]
        self.denoms.sort(key=lambda d: -d.value)

    def create_auditors(self, t: int, denoms: list[Denomination]) -> None:
        for i, active in enumerate((True, False)):
            uuid = self.w.serial("auditors")
            seed, pub = self.keypair()
            url = f"https://auditor{uuid}.example.com/"
            self.put("auditors", uuid, pub, f"Auditor {uuid}", url, active,
                     t - (i + 1) * 30 * DAY)
            for d in denoms if active else denoms[::2]:
                if active and self.forger is not None and self.forger.skip_auditor_sig(d):
                    continue
                self.put("auditor_denom_sigs", self.w.serial("auditor_denom_sigs"), uuid,
                         d.serial, self.sign("auditor_denom_sigs.auditor_sig", seed,
                                             auditor_url=url, **self.denom_terms[d.serial]))

    def create_sign_keys(self, t_from: int, t_to: int) -> None:
        first = None
        t = t_from
        while t < t_to:
            esk = self.w.serial("exchange_sign_keys")
            first = first or esk
            _, pub = self.keypair()
            self.esk_pubs[esk] = pub
            self.put("exchange_sign_keys", esk, pub, self.master_sign(
                "exchange_sign_keys.master_sig", valid_from=t, expire_sign=t + 45 * DAY,
                expire_legal=t + 2 * YEAR, exchange_pub=pub), t, t + 45 * DAY, t + 2 * YEAR)
            t += 30 * DAY
        assert first is not None, "t_from < t_to: the loop made at least one key"
        self.put("signkey_revocations", self.w.serial("signkey_revocations"), first,
                 self.master_sign("signkey_revocations.master_sig",
                                  exchange_pub=self.esk_pubs[first]))

    def create_partners(self, t: int) -> None:
        rng = self.rng
        for i in range(2):
            serial = self.w.serial("partners")
            url = f"https://exchange{serial}.partner{i}.example.org/"
            wad_fee = CENT
            self.put("partners", serial, rng.key32(), t - YEAR, t + YEAR, 0, HOUR, wad_fee,
                     rng.key64(), url)
            self.partners.append((serial, url, wad_fee))

    def profit_drain(self, t: int) -> None:
        rng = self.rng
        wtid = rng.key32()
        payto = "payto://iban/CH9300762011623852957?receiver-name=Exchange+Operator"
        amount = rng.between(10, 500) * UNIT + rng.between(0, 100) * CENT
        self.put("profit_drains", self.w.serial("profit_drains"), wtid, ACCOUNT_SECTION, payto, t,
                 amount, self.master_sign("profit_drains.master_sig", wtid=wtid, trigger_date=t,
                                          amount=A(amount), account_section=ACCOUNT_SECTION,
                                          payto_uri=payto),
                 t < self.now - HOUR)
