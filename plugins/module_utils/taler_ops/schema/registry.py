"""The table registry: what the sync copies, in which order, and how it checks it.

Derived from the table specs in schema/exchange_tables.py, so the DDL and the copy
rules cannot disagree.  Every later component (generator, sync, audit, verify,
GC, status) reads tables through this module.
"""

from dataclasses import dataclass, field
from typing import Tuple

from .exchange_tables import TABLES, TALER_SYNC_ORDER
from .spec import Column, DerivedHash, ForeignKey, Table

SCHEMA = "exchange"


@dataclass(frozen=True)
class Entry:
    name: str
    serial: str
    copy_columns: Tuple[Column, ...]     # serial first, then in table order
    mutable_columns: Tuple[Column, ...]  # never copied (keep their default on the safe copy)
    parents: Tuple[ForeignKey, ...]
    derived: Tuple[DerivedHash, ...]
    natural_keys: Tuple[Tuple[str, ...], ...]
    taler_sync: bool
    # False where Taler's schema does not make the serial unique by itself
    # (reserves_open_deposits, policy_fulfillments): the sync must check it.
    serial_unique: bool = True
    spec: Table = field(kw_only=True)    # the Table it was derived from

    @property
    def first_seen_columns(self) -> Tuple[Column, ...]:
        """Copied once as first seen; the exchange may change them later (not final)."""
        return tuple(c for c in self.copy_columns if c.first_seen)

    @property
    def compared_columns(self) -> Tuple[Column, ...]:
        """What verify compares: the copied columns the exchange never changes."""
        return tuple(c for c in self.copy_columns if not c.first_seen)

    def enforced_keys(self, partitions: int | None) -> set[Tuple[str, ...]]:
        """Keys (serial included) whose uniqueness the schema enforces table-wide
        with this partitioning (None: unpartitioned).  The sync checks the others."""
        return self.spec.enforced_keys(partitions)

    @property
    def copy_column_names(self) -> Tuple[str, ...]:
        return tuple(c.name for c in self.copy_columns)

    @property
    def qualified(self) -> str:
        return f"{SCHEMA}.{self.name}"

    def column(self, name: str) -> Column:
        for col in self.copy_columns + self.mutable_columns:
            if col.name == name:
                return col
        raise KeyError(f"{self.name}.{name}")


def _entry(table: Table) -> Entry:
    ser = table.column(table.serial)
    others = tuple(c for c in table.columns if c.name != table.serial and not c.mutable)
    return Entry(
        name=table.name,
        serial=table.serial,
        copy_columns=(ser,) + others,
        mutable_columns=tuple(c for c in table.columns if c.mutable),
        parents=table.foreign_keys,
        derived=table.derived,
        natural_keys=table.natural_keys,
        taler_sync=table.taler_sync,
        serial_unique=table.serial_unique,
        spec=table,
    )


def _copy_order(tables: list[Table]) -> list[Table]:
    """Parents before children; otherwise Taler's order (fixes taler-facts §8.6)."""
    by_name = {t.name: t for t in tables}
    base = [n for n in TALER_SYNC_ORDER if n in by_name]
    base += [t.name for t in tables if t.name not in base]
    done: set[str] = set()
    order: list[str] = []
    while len(order) < len(base):
        for name in base:
            if name in done:
                continue
            parents = {f.table for f in by_name[name].foreign_keys if f.table != name}
            missing = parents - done
            unknown = missing - set(by_name)
            if unknown:
                raise ValueError(f"{name} references non-replicated table(s) {sorted(unknown)}")
            if not missing:
                done.add(name)
                order.append(name)
                break
        else:
            raise ValueError("foreign keys between replicated tables form a cycle")
    return [by_name[n] for n in order]


REPLICATED = tuple(_entry(t) for t in _copy_order([t for t in TABLES if t.replicated]))
BY_NAME = {e.name: e for e in REPLICATED}
TALER_SYNC_TABLES = tuple(e.name for e in REPLICATED if e.taler_sync)
ALL_TABLES = tuple(t.name for t in TABLES)


def entry(name: str) -> Entry:
    try:
        return BY_NAME[name]
    except KeyError:
        raise KeyError(f"{name} is not a replicated table") from None
