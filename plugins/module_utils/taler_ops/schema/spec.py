"""Building blocks of the exchange schema description.

A table is described once, as data; the DDL of every patch and the sync's
copy registry are both derived from it, so they cannot drift apart.
"""

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Literal, Optional, Tuple, TypedDict, Unpack

# The built-in model's patch names.  They are deliberately not Taler's
# ("exchange-NNNN"): a database the model built must never look to Taler's
# dbinit (or to taler-ops' detection of a Taler-built database) as if Taler's
# own files had been applied.  Every other module takes the names from here.
PATCH_PREFIX = "model-exchange-"
FIRST_PATCH = PATCH_PREFIX + "0001"
# KYC authorisation transfers (kycauths_in), as Taler's exchange-0005 adds them.
KYC_AUTH_PATCH = PATCH_PREFIX + "0002"
# Taler's own patch names, which no model patch may bear.
TALER_PATCH_PREFIXES = ("exchange-", "auditor-")

HASHCODE = "exchange.gnunet_hashcode"   # Taler's 32-byte domain (policy tables only)

# The actions Taler's foreign keys take (the model has no other).
OnDelete = Literal["CASCADE", "RESTRICT", "NO ACTION"]
KeyKind = Literal["PRIMARY KEY", "UNIQUE"]
# The rules of schema/hashing.py (its RULES), by which a derived column is recomputed.
Rule = Literal["denom_pub_hash", "full_payto", "normalized_payto", "coin_ev_hash", "sha512"]


@dataclass(frozen=True)
class Column:
    name: str
    sql_type: str                 # as PostgreSQL spells it in format_type()
    nullable: bool = False
    default: Optional[str] = None  # SQL expression
    length: Optional[int] = None   # CHECK (LENGTH(col) = n) for keys, hashes, signatures
    mutable: bool = False          # changed by the exchange after insert: never replicated
    since: str = FIRST_PATCH
    check: Optional[str] = None    # extra CHECK expression over this column
    # Changed by the exchange after insert, but NOT NULL without a default (or
    # needed by the audit as first written): copied once as first seen, never
    # compared by verify, never final.  See docs/hash-rules.md and docs/sync.md.
    first_seen: bool = False

    @property
    def is_amount(self) -> bool:
        return self.sql_type == "exchange.taler_amount"


@dataclass(frozen=True)
class ForeignKey:
    columns: Tuple[str, ...]
    table: str
    ref_columns: Tuple[str, ...]
    on_delete: OnDelete = "CASCADE"
    # Declared inline in Taler's CREATE TABLE, so it exists in partitioned mode
    # too (only on tables that are never partitioned).
    inline: bool = False


@dataclass(frozen=True)
class DerivedHash:
    """``column`` must equal ``rule(source)``; the sync recomputes it (see schema/hashing.py).

    A rule that also needs a value of the row's parent names it with
    ``parent = (local column, parent table, parent key column, parent value column)``:
    the rule is then ``rule(source, parent value)``, e.g. h_coin_ev needs the
    denom_pub_hash of the row's denomination.
    """

    column: str
    rule: Rule
    source: str
    parent: Optional[Tuple[str, str, str, str]] = None
    # The exchange may leave the column NULL whatever the source holds (Taler's
    # h_normalized_payto on rows from before exchange-0007): a NULL is kept as
    # NULL, a value must match the rule.
    null_kept: bool = False


@dataclass(frozen=True)
class Table:
    name: str
    serial: str
    columns: Tuple[Column, ...]
    primary_key: Optional[Tuple[str, ...]]   # None: the table has no primary key (as in Taler)
    uniques: Tuple[Tuple[str, ...], ...] = ()
    foreign_keys: Tuple[ForeignKey, ...] = ()
    partition_key: Optional[str] = None   # hash-partitioned with dbinit -P
    # Partitioned mode (dbinit -P), as Taler's exchange_do_create_tables does it:
    # the keys listed here stay on the partitioned table (Taler declares them in
    # CREATE TABLE); every other key exists on each partition only.
    master_keys: Tuple[Tuple[str, ...], ...] = ()
    # Keys Taler adds through a "foreign" action: they do not exist at all under -P.
    unpartitioned_only_keys: Tuple[Tuple[str, ...], ...] = ()
    replicated: bool = True
    taler_sync: bool = True               # in taler-auditor-sync's list of 44
    derived: Tuple[DerivedHash, ...] = ()
    since: str = FIRST_PATCH
    comment: str = ""
    extra: dict[str, object] = field(default_factory=dict, compare=False, hash=False)

    def column(self, name: str) -> Column:
        for col in self.columns:
            if col.name == name:
                return col
        raise KeyError(f"{self.name}.{name}")

    @property
    def keys(self) -> list[tuple[KeyKind, Tuple[str, ...]]]:
        """(kind, columns) of every PK/UNIQUE in unpartitioned mode, PK first."""
        out: list[tuple[KeyKind, Tuple[str, ...]]] = (
            [("PRIMARY KEY", self.primary_key)] if self.primary_key else [])
        return out + [("UNIQUE", u) for u in self.uniques]

    @property
    def natural_keys(self) -> Tuple[Tuple[str, ...], ...]:
        """Keys other than the serial that must be unique (PK first, no repeats)."""
        out: list[Tuple[str, ...]] = []
        for _, k in self.keys:
            if k != (self.serial,) and k not in out:
                out.append(k)
        return tuple(out)

    @property
    def serial_unique(self) -> bool:
        """Whether the schema itself makes the serial unique (unpartitioned mode)."""
        return any(k == (self.serial,) for _, k in self.keys)

    def enforced_keys(self, partitions: int | None) -> set[Tuple[str, ...]]:
        """Keys whose uniqueness the schema enforces across the whole table.

        Under -P a per-partition key still holds globally when it contains the
        partition key (equal keys hash to the same partition).
        """
        keys = [k for _, k in self.keys]
        if partitions is None or self.partition_key is None:
            return {tuple(k) for k in keys}
        return {tuple(k) for k in keys
                if k not in self.unpartitioned_only_keys and self.partition_key in k}


class KeyOptions(TypedDict, total=False):
    """What a constructor passes on to Column besides name, type and length (key32, key64)."""
    nullable: bool
    default: Optional[str]
    mutable: bool
    since: str
    check: Optional[str]
    first_seen: bool


class ColumnOptions(KeyOptions, total=False):
    length: Optional[int]


# Column constructors, named after what the column holds in Taler.
def serial(name: str) -> Column:
    return Column(name, "bigint", default="GENERATED BY DEFAULT AS IDENTITY")


def key32(name: str, **kw: Unpack[KeyOptions]) -> Column:
    return Column(name, "bytea", length=32, **kw)


def key64(name: str, **kw: Unpack[KeyOptions]) -> Column:
    return Column(name, "bytea", length=64, **kw)


def blob(name: str, **kw: Unpack[ColumnOptions]) -> Column:
    return Column(name, "bytea", **kw)


def amount(name: str, **kw: Unpack[ColumnOptions]) -> Column:
    return Column(name, "exchange.taler_amount", **kw)


def timestamp(name: str, **kw: Unpack[ColumnOptions]) -> Column:
    """GNUnet absolute time: microseconds since the Unix epoch."""
    return Column(name, "bigint", **kw)


def int8(name: str, **kw: Unpack[ColumnOptions]) -> Column:
    return Column(name, "bigint", **kw)


def int4(name: str, **kw: Unpack[ColumnOptions]) -> Column:
    return Column(name, "integer", **kw)


def int2(name: str, **kw: Unpack[ColumnOptions]) -> Column:
    return Column(name, "smallint", **kw)


def text(name: str, **kw: Unpack[ColumnOptions]) -> Column:
    return Column(name, "text", **kw)


def boolean(name: str, **kw: Unpack[ColumnOptions]) -> Column:
    return Column(name, "boolean", **kw)


def hashcode(name: str, array: bool = False, **kw: Unpack[ColumnOptions]) -> Column:
    return Column(name, HASHCODE + ("[]" if array else ""), **kw)


def fk(cols: str | Sequence[str], table: str, ref: str | Sequence[str] | None = None,
       on_delete: OnDelete = "CASCADE", inline: bool = False) -> ForeignKey:
    columns = (cols,) if isinstance(cols, str) else tuple(cols)
    ref_columns = columns if ref is None else ((ref,) if isinstance(ref, str) else tuple(ref))
    return ForeignKey(columns, table, ref_columns, on_delete, inline)
