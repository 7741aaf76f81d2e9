"""One signature column of the replicated tables and how it is checked.

A ``SignatureColumn`` says which purpose the column carries, whose key
verifies it, how far the replicated data allows checking it, and gives

- ``query(schema)``: the SQL that reads one batch of rows with every value the
  check needs (parents joined with LEFT JOIN, so a missing parent makes the
  check fail instead of hiding the row); parameters ``after`` (serial) and
  ``limit``;
- ``verify(row, ctx)``: True (valid), False (invalid) or None (cannot be
  decided from replicated data for this row, e.g. a deposit with a policy);
- ``sign(row, ctx, key)``: the signature the generator stores.

A row is a mapping of the query's column names; ``row_from_db`` turns the
``X__val``/``X__frac`` pairs the queries select (``amt``) into ``X = (val, frac)``.
The entries themselves, one per column of the 44 replicated tables, are in
``catalog``.
"""

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, Callable, Final, Literal, Mapping

from . import denom, eddsa
from .context import SignatureContext
from .hashes import coin_hash
from .mint import DenominationKey

# A row as the columns' queries return it (see row_from_db): database values.
Row = Mapping[str, Any]
BlockBuilder = Callable[[Row, SignatureContext], list[bytes]]
KeyOf = Callable[[Row, SignatureContext], bytes]

EDDSA: Final = "eddsa"            # Ed25519 over a purpose block
COIN: Final = "coin"              # unblinded RSA/CS denomination signature on a coin
BLIND: Final = "blind"            # blinded signature checked against the stored planchet
BLIND_FORM: Final = "blind-form"  # blinded signature whose message is not stored: form only
NONE: Final = "unverifiable"      # the signed data is not in the replicated tables
Kind = Literal["eddsa", "coin", "blind", "blind-form", "unverifiable"]

_BUILD_ERRORS = (ValueError, TypeError, KeyError, AttributeError)


class MissingConfiguration(RuntimeError):
    """A configuration value the check needs is not set: an error of the
    auditor's setup, never a verdict on the row (so never caught as one)."""


@dataclass(frozen=True)
class SignatureColumn:
    table: str
    column: str
    kind: Kind
    purpose: int | None
    key: str                 # where the verifying key comes from
    checkable: Literal["yes", "partly", "no"]
    note: str
    serial: str              # the row's serial column (batches, findings)
    select: str              # "SELECT ... FROM {s}.table alias ..." without WHERE/ORDER
    serial_sql: str          # the serial expression in ``select``
    nullable: bool = False   # NULL means "no signature given", not "forged"
    _blocks: BlockBuilder | None = field(default=None, repr=False)
    _pub: KeyOf | None = field(default=None, repr=False)
    _undecided: Callable[[Row], bool] | None = field(default=None, repr=False)

    @property
    def name(self) -> str:
        return f"{self.table}.{self.column}"

    def query(self, schema: str = "exchange") -> str:
        return (self.select.format(s=schema)
                + f" WHERE {self.serial_sql} > %(after)s ORDER BY {self.serial_sql} LIMIT %(limit)s")

    # -- EdDSA -------------------------------------------------------------------
    def _eddsa(self) -> tuple[BlockBuilder, KeyOf, int]:
        """What an EdDSA check needs: the blocks, the verifying key, the purpose."""
        if self._blocks is None or self._pub is None or self.purpose is None:
            raise TypeError(f"{self.name} is not an EdDSA signature over a block")
        return self._blocks, self._pub, self.purpose

    def blocks(self, row: Row, ctx: SignatureContext) -> list[bytes]:
        """The candidate signed blocks (one, except close requests)."""
        return self._eddsa()[0](row, ctx)

    def public_key(self, row: Row, ctx: SignatureContext) -> bytes:
        return self._eddsa()[1](row, ctx)

    # -- verdicts ----------------------------------------------------------------
    def verify(self, row: Row, ctx: SignatureContext) -> bool | None:
        if self.kind == NONE:
            return None
        sig = row.get("sig")
        if sig is None:
            return None if self.nullable else False
        ok = self._check(row, ctx, bytes(sig))
        if not ok and self._undecided is not None and self._undecided(row):
            return None
        return ok

    def _check(self, row: Row, ctx: SignatureContext, sig: bytes) -> bool:
        try:
            if self.kind == EDDSA:
                blocks_of, key_of, purpose = self._eddsa()
                pub = key_of(row, ctx)
                return any(eddsa.verify(pub, blk, sig, purpose) for blk in blocks_of(row, ctx))
            if self.kind == COIN:
                return denom.verify_coin(row["denom_pub"], sig, row["coin_pub"],
                                         row.get("age_commitment_hash"))
            if self.kind == BLIND:
                return denom.verify_blind_sig(row["denom_pub"], row["coin_ev"], row["ewv"], sig)
            if self.kind == BLIND_FORM:
                return denom.check_blind_sig_form(row["denom_pub"], sig)
        except _BUILD_ERRORS:
            # A row whose signed data cannot even be rebuilt (missing parent,
            # wrong length, out-of-range amount) carries no valid signature.
            return False
        raise AssertionError(self.kind)

    # -- signing (the generator) ---------------------------------------------------
    def sign(self, row: Row, ctx: SignatureContext, key: bytes | DenominationKey) -> bytes:
        """The value to store in the column.  ``key``: a 32-byte EdDSA seed;
        for known_coins a ``mint.DenominationKey``; for refresh_revealed_coins.ev_sig
        also a DenominationKey (its CS session nonce must be the planchet's)."""
        if self.kind == EDDSA and not isinstance(key, DenominationKey):
            return eddsa.sign(key, self.blocks(row, ctx)[0])
        if self.kind == COIN and isinstance(key, DenominationKey):
            return key.sign_coin(coin_hash(row["coin_pub"], row.get("age_commitment_hash")))
        if self.kind == BLIND and isinstance(key, DenominationKey):
            return key.sign_planchet(row["coin_ev"], melt=True)
        raise TypeError(f"{self.name}: no signing function for a {type(key).__name__} key "
                        "(see taler_ops.crypto.mint)")


# --- amounts in the queries and their rows -----------------------------------------

def amt(expr: str, alias: str) -> str:
    """Select an amount as two plain columns (no composite-type parsing)."""
    return f"({expr}).val AS {alias}__val, ({expr}).frac AS {alias}__frac"


def row_from_db(names: Sequence[str], values: Sequence[Any]) -> dict[str, Any]:
    """Row mapping from a cursor's column names and one tuple: ``X__val`` and
    ``X__frac`` become ``X = (val, frac)`` (None when NULL); memoryviews become bytes."""
    row: dict[str, Any] = {}
    for name, value in zip(names, values):
        if isinstance(value, memoryview):
            value = bytes(value)
        if name.endswith("__val"):
            row.setdefault(name[:-5], [None, None])[0] = value
        elif name.endswith("__frac"):
            row.setdefault(name[:-6], [None, None])[1] = value
        else:
            row[name] = value
    for name, value in row.items():
        if isinstance(value, list):
            row[name] = None if value[0] is None else (value[0], value[1])
    return row
