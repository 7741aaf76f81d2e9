"""What the model's exchange keeps in memory: bank accounts, denominations, coins,
reserves, merchants, its fee schedule, and merchants' deposit confirmations."""

import hashlib
from collections.abc import Iterable
from typing import TypedDict

from ..crypto.mint import DenominationKey
from ..schema import hashing
from ..schema.registry import BY_NAME
from ..schema.spec import Rule
from .units import Rand

ACCOUNT_SECTION = "exchange-account-1"
WIRE_METHODS = ("x-taler-bank", "iban")

# A customer's bank account: (wire_target_h_payto, payto URI).
Customer = tuple[bytes, str]


# -- bank accounts -------------------------------------------------------------

def _rule(table: str, column: str) -> Rule:
    for d in BY_NAME[table].derived:
        if d.column == column:
            return d.rule
    raise KeyError(f"{table}.{column} is not a derived column")


_H_PAYTO_RULE = _rule("wire_targets", "wire_target_h_payto")


def h_payto(payto: str) -> bytes:
    """wire_target_h_payto of a payto URI, by the registry's rule (the full payto hash)."""
    h = hashing.compute(_H_PAYTO_RULE, payto)
    assert h is not None, "a hash rule maps a value to a hash"
    return h


def h_normalized_payto(payto: str) -> bytes:
    """The normalized payto hash: what KYC tables and account_merges hold (§2.5)."""
    h = hashing.normalized_payto_hash(payto)
    assert h is not None, f"the simulator's payto URIs normalize: {payto}"
    return h


def payto_method(payto: str) -> str:
    """The payment method of a payto URI ("iban" of payto://iban/...), whose wire fee applies."""
    return payto.split("://", 1)[1].split("/", 1)[0]


def iban_payto(rng: Rand, name: str, bic: bool = False) -> str:
    """A payto://iban URI with a valid German IBAN (real check digits) and receiver-name."""
    bban = f"{rng.getrandbits(27) % 10**8:08d}{rng.getrandbits(34) % 10**10:010d}"
    iban = "DE" + hashing.iban_check_digits("DE", bban) + bban
    return f"payto://iban/{'COBADEFFXXX/' if bic else ''}{iban}?receiver-name={name}"


# -- what the exchange keeps track of -------------------------------------------
# Taler's BYTEA layouts (taler-real-schema §2.1) come from taler_ops.crypto
# (denom, mint): real keys, real signatures.

class Denomination:
    __slots__ = ("serial", "value", "fee_withdraw", "fee_deposit", "fee_refresh",
                 "fee_refund", "revoked", "age_mask", "cs", "valid_from", "expire_withdraw",
                 "key", "h")

    def __init__(self, serial: int, value: int, fees: tuple[int, int, int, int], revoked: bool,
                 age_mask: int, cs: bool, valid_from: int, expire_withdraw: int,
                 key: DenominationKey):
        self.serial = serial
        self.value = value
        self.fee_withdraw, self.fee_deposit, self.fee_refresh, self.fee_refund = fees
        self.revoked = revoked
        self.age_mask = age_mask
        self.cs = cs
        self.valid_from = valid_from
        self.expire_withdraw = expire_withdraw
        self.key = key              # signs its coins
        self.h: bytes = key.denom_pub_hash

    @property
    def cost(self) -> int:
        return self.value + self.fee_withdraw


class DenomTerms(TypedDict):
    """A denomination's signed terms, as the signature catalog names them (amounts as
    (val, frac) pairs)."""
    valid_from: int
    expire_withdraw: int
    expire_deposit: int
    expire_legal: int
    coin: tuple[int, int]
    fee_withdraw: tuple[int, int]
    fee_deposit: tuple[int, int]
    fee_refresh: tuple[int, int]
    fee_refund: tuple[int, int]
    denom_pub: bytes


class Coin:
    __slots__ = ("pub", "denom", "spent", "known_id", "withdraw_serial", "age_hash",
                 "fully_spent_by_deposit", "priv", "bks", "sig")

    def __init__(self, pub: bytes, denom: Denomination, withdraw_serial: int | None,
                 priv: bytes, bks: bytes, age_hash: bytes | None):
        self.pub = pub
        self.priv = priv            # EdDSA seed of coin_pub
        self.bks = bks              # blinding secret (recoup.coin_blind)
        self.sig: bytes | None = None   # known_coins.denom_sig
        self.denom = denom
        self.spent = 0
        self.known_id: int | None = None
        self.withdraw_serial = withdraw_serial
        self.age_hash = age_hash
        self.fully_spent_by_deposit = False

    @property
    def remaining(self) -> int:
        return self.denom.value - self.spent


class Reserve:
    __slots__ = ("pub", "uuid", "credit", "debit", "last_activity", "origin", "expiration",
                 "gc_date", "closed", "last_debit", "balance_offset", "priv", "open_sig")

    def __init__(self, pub: bytes, uuid: int, origin: Customer | None, priv: bytes):
        self.pub = pub
        self.priv = priv            # EdDSA seed of reserve_pub
        self.open_sig: bytes | None = None  # the last open request's reserve_sig
        self.uuid = uuid
        self.credit = 0
        self.debit = 0
        self.last_activity = 0
        self.last_debit = 0
        self.origin = origin        # the account it came from
        self.expiration: int | None = None
        self.gc_date: int | None = None
        self.closed = False
        self.balance_offset = 0     # only sim/inject.py sets it

    @property
    def balance(self) -> int:
        return self.credit - self.debit


class Merchant:
    __slots__ = ("pub", "payto", "h_payto", "shard", "priv")

    def __init__(self, pub: bytes, payto: str, priv: bytes):
        self.pub = pub
        self.priv = priv
        self.payto = payto
        self.h_payto = h_payto(payto)
        self.shard = int.from_bytes(pub[:4], "big") & 0x7FFFFFFF


# (start, end, wire_fee, closing_fee) of wire fees; (start, end, history_fee,
# account_fee) of global fees.
FeePeriod = tuple[int, int, int, int]


class FeeSchedule:
    """Wire and global fees by period; rows present in the database win."""

    def __init__(self) -> None:
        self.wire: dict[str, list[FeePeriod]] = {m: [] for m in WIRE_METHODS}   # sorted
        self.glob: list[FeePeriod] = []                                         # sorted

    @staticmethod
    def _find(rows: list[FeePeriod], t: int, what: str) -> FeePeriod:
        for row in rows:
            if row[0] <= t < row[1]:
                return row
        raise LookupError(f"no {what} covers time {t}")

    def wire_fee(self, t: int, method: str = "x-taler-bank") -> int:
        return self._find(self.wire[method], t, f"wire fee for {method}")[2]

    def closing_fee(self, t: int, method: str = "x-taler-bank") -> int:
        return self._find(self.wire[method], t, f"wire fee for {method}")[3]

    def history_fee(self, t: int) -> int:
        return self._find(self.glob, t, "global fee")[2]

    def account_fee(self, t: int) -> int:
        return self._find(self.glob, t, "global fee")[3]


# -- what merchants tell the auditor ---------------------------------------------

class DepositConfirmation(TypedDict):
    """A row of auditor_deposit_confirmations, by column (amounts in 1e-8 units)."""
    h_contract_terms: bytes
    h_policy: bytes
    h_wire: bytes
    exchange_timestamp: int
    refund_deadline: int
    wire_deadline: int
    total_without_fee: int
    coin_pubs: list[bytes]
    coin_sigs: list[bytes]
    merchant_pub: bytes
    exchange_sig: bytes
    exchange_pub: bytes
    master_sig: bytes


def deposit_confirmation(tag: int, h_contract: bytes, h_wire: bytes, t: int,
                         refund_deadline: int, wire_deadline: int, total: int,
                         coin_pubs: Iterable[bytes], coin_sigs: Iterable[bytes],
                         merchant_pub: bytes) -> DepositConfirmation:
    """A merchant's deposit confirmation as Taler's auditor-httpd stores it (a row of
    auditor_deposit_confirmations).  The exchange's signature and signing key are
    stand-ins derived from ``tag``: the audit does not verify them (auditor-httpd does)."""
    stand_in = hashlib.sha512(b"deposit-confirmation" + tag.to_bytes(8, "big")).digest()
    return {"h_contract_terms": h_contract, "h_policy": bytes(64), "h_wire": h_wire,
            "exchange_timestamp": t, "refund_deadline": refund_deadline,
            "wire_deadline": wire_deadline, "total_without_fee": total,
            "coin_pubs": list(coin_pubs), "coin_sigs": list(coin_sigs),
            "merchant_pub": merchant_pub, "exchange_sig": stand_in,
            "exchange_pub": stand_in[:32], "master_sig": stand_in[::-1]}
