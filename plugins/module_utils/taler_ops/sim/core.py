"""The model exchange's state and the primitives its business is made of.

``ExchangeCore`` holds what the exchange knows (denominations, merchants,
customers, fees, deposits due for aggregation) and does what every action
needs: put a row, sign it (or forge the signature, when sim/inject.py asks),
draw keys from the run's random stream, make coins, book a reserve's credits
and debits.  The business itself is in the mixins that sim/exchange_model.py
combines; each of them builds on this class only (or on another mixin), so
the modules import in one direction.
"""

from typing import Any, Protocol, TypedDict

from ..crypto import catalog, eddsa, mint
from ..crypto import denom as codec
from ..crypto import keyring as _keyring
from ..crypto.hashes import coin_ev_hash
from .columns import COLUMNS
from .copywriter import CopyWriter
from .entities import (Coin, Customer, Denomination, DenomTerms, DepositConfirmation, FeeSchedule,
                       Merchant, Reserve)
from .units import Rand, hashcode

# A deposit the aggregator owes: (merchant, wire deadline, batch deposit serial, net amount).
Due = tuple[Merchant, int, int, int]
# A partner exchange: (partners serial, base URL, wad fee).
Partner = tuple[int, str, int]


class PurseTerms(TypedDict):
    """What a purse's merge and account merge sign (purse_requests' values)."""
    merge_seed: bytes
    merge_pub: bytes
    purse_expiration: int
    amount_with_fee: tuple[int, int]
    purse_fee: tuple[int, int]
    h_contract_terms: bytes
    age_limit: int
    flags: int


class Hooks(Protocol):
    """Where sim/inject.py plants misbehaviour into the model's business."""

    def hang_refresh(self, melt_serial: int, amount: int) -> bool: ...

    def wire_out_plan(self, ex: "ExchangeCore", item: Due,
                      t: int) -> tuple[str | None, int, Merchant]: ...

    def wire_out_amount(self, serial: int, expected: int) -> int: ...

    def wire_out_planted(self, kind: str, aggregation_row: int, wire_out: int, item: Due,
                         t: int, target: Merchant) -> None: ...

    def reserve_written(self, res: Reserve, stored: int) -> None: ...


class Forger(Protocol):
    """Where sim/inject.py has the model forge a signature (or leave one out)."""

    def forge(self, column: str) -> bool: ...

    def forged_written(self, column: str, serial: int) -> None: ...

    def skip_auditor_sig(self, denom: Denomination) -> bool: ...


class ExchangeCore:
    """The exchange's state and the primitives of its business rules."""

    def __init__(self, writer: CopyWriter, rng: Rand, now: int,
                 keys: _keyring.Keyring | None = None, signed: bool = True):
        self.w = writer
        self.rng = rng
        self.now = now
        # signed=False (benchmarks at scale only): every signature and public key is
        # random bytes of the right layout, ten times faster; the audit must then run
        # without the signatures check (no master key), which would find them all forged.
        self.signed = signed
        # Every signature is real (docs/generator.md): the master key and the
        # denomination keys come from the keyring, the other keys from rng.
        self.keys = keys if keys is not None else _keyring.Keyring(0)
        self.ctx = self.keys.ctx
        self.purses: dict[bytes, PurseTerms] = {}       # purse_pub -> what its merges sign
        self.denom_terms: dict[int, DenomTerms] = {}     # serial -> signed terms (auditors')
        self.esk_pubs: dict[int, bytes] = {}            # esk_serial -> exchange_pub
        self.fees = FeeSchedule()
        self.denoms: list[Denomination] = []    # withdrawable, not revoked, by value descending
        self.revoked: list[Denomination] = []
        self.age_denoms: list[Denomination] = []
        self.all_denoms: list[Denomination] = []
        self.merchants: list[Merchant] = []
        self.customers: list[Customer] = []
        self.partners: list[Partner] = []
        self.wire_reference = 0
        self.due: list[Due] = []                # deposits to aggregate
        self.hooks: Hooks | None = None         # when misbehaviour is to be planted
        self.forger: Forger | None = None       # when signatures are to be forged
        self.forged: dict[str, bytes] = {}      # column -> forged value not yet written
        # Merchants' deposit confirmations (for the auditor database), kept only when
        # asked for: every eighth batch deposit's (generator.bulk's auditor_uri).
        self.confirmations: list[DepositConfirmation] | None = None

    # -- rows and signatures -------------------------------------------------
    def put(self, table: str, *row: Any) -> None:
        self.w.add(table, row)
        if self.forged:
            self._note_forged(table, row)

    def _note_forged(self, table: str, row: tuple[Any, ...]) -> None:
        forger = self.forger
        assert forger is not None, "only the forger's requests leave forged values"
        for column, value in list(self.forged.items()):
            t, col = column.split(".")
            if t == table and row[COLUMNS[table].index(col)] == value:
                del self.forged[column]
                forger.forged_written(column, row[0])

    def forge(self, column: str) -> bool:
        """True if sim/inject.py wants this signature of ``column`` forged."""
        return self.forger is not None and self.forger.forge(column)

    def sign(self, column: str, seed: bytes, **row: Any) -> bytes:
        """The value of signature column ``column`` ("table.column") for a row
        whose signed values are ``row`` (the catalog's names), signed with ``seed``."""
        if not self.signed:
            return self.rng.key64()
        if self.forge(column):
            # The right block under a wrong key: well-formed, and invalid.
            sig = catalog.get(column).sign(row, self.ctx, hashcode(b"forged" + bytes(seed)))
            self.forged[column] = sig
            return sig
        return catalog.get(column).sign(row, self.ctx, seed)

    def master_sign(self, column: str, **row: Any) -> bytes:
        return self.sign(column, self.keys.master, **row)

    # -- keys and coins --------------------------------------------------------
    def keypair(self) -> tuple[bytes, bytes]:
        """(EdDSA seed, public key), from the run's random stream."""
        seed = self.rng.key32()
        return seed, (eddsa.public_key(seed) if self.signed else self.rng.key32())

    def make_coin(self, key: mint.DenominationKey, coin_pub: bytes, bks: bytes,
                  age_hash: bytes | None, melt: bool = False) -> mint.Planchet:
        """``key.make_coin`` (a valid planchet), or with signed=False one of random
        values in the same layouts, whose h_coin_ev is still the hash of its coin_ev."""
        if self.signed:
            return key.make_coin(coin_pub, bks, age_hash, melt=melt)
        rb = self.rng.randbytes
        if key.cipher == codec.RSA:
            assert key.rsa_priv is not None, "an RSA denomination key has its private key"
            size = (key.rsa_priv.public.n.bit_length() + 7) // 8
            blinded = int.from_bytes(rb(size), "big") >> 1
            coin_ev = codec.encode_rsa_planchet(blinded)
            return mint.Planchet(coin_ev, codec.encode_ewv(codec.RSA),
                                 coin_ev_hash(key.denom_pub_hash, codec.RSA, coin_ev[8:]),
                                 codec.encode_rsa_sig(int.from_bytes(rb(size), "big") >> 1,
                                                      blinded=True),
                                 codec.encode_rsa_sig(int.from_bytes(rb(size), "big") >> 1))
        coin_ev = codec.encode_cs_planchet((rb(32), rb(32)), rb(32))
        return mint.Planchet(coin_ev, codec.encode_ewv(codec.CS, (rb(32), rb(32))),
                             coin_ev_hash(key.denom_pub_hash, codec.CS, coin_ev[8:]),
                             codec.encode_cs_blind_sig(self.rng.getrandbits(1), rb(32)),
                             codec.encode_cs_sig(rb(32), rb(32)))

    def new_coin(self, denom: Denomination, withdraw_serial: int | None = None) -> Coin:
        """A coin's keys and blinding secret (not yet signed)."""
        seed, pub = self.keypair()
        bks = self.rng.key32()
        age_hash = self.rng.key32() if denom.age_mask else None
        return Coin(pub, denom, withdraw_serial, seed, bks, age_hash)

    def know(self, coin: Coin) -> None:
        """The exchange sees the coin (known_coins gets its serial; the row comes later)."""
        if coin.known_id is None:
            coin.known_id = self.w.serial("known_coins")

    # -- bookkeeping -------------------------------------------------------------
    def next_wire_reference(self) -> int:
        self.wire_reference += 1
        return self.wire_reference

    def _credit(self, res: Reserve, amount: int, t: int) -> None:
        res.credit += amount
        res.last_activity = max(res.last_activity, t)

    def _debit(self, res: Reserve, amount: int, t: int) -> None:
        res.debit += amount
        res.last_activity = max(res.last_activity, t)
        res.last_debit = max(res.last_debit, t)
