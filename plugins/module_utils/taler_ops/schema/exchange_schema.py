"""DDL of the exchange patches, rendered from the table specs.

A patch creates the tables whose ``since`` is that patch and adds the columns
whose ``since`` is that patch to older tables, so the specs stay the single
description of the schema.  With ``partitions`` (dbinit -P N) the tables that
have a partition key are hash-partitioned exactly as Taler's
exchange_do_create_tables does it: NULL = plain tables with all foreign keys,
0 = one default partition, N >= 1 = N hash partitions; then each key sits where
Taler puts it (spec.Table.master_keys) and only the foreign keys Taler declares
inline survive.  tests/test_taler_schema_identity.py compares the result with a
database built from Taler's own files.
"""

from collections.abc import Iterable
from dataclasses import dataclass
from typing import Tuple

from . import bookkeeping
from .exchange_tables import TABLES
from .spec import FIRST_PATCH, KYC_AUTH_PATCH, Column, KeyKind, Table
from .spec import PATCH_PREFIX as PATCH_PREFIX  # part of this module's interface (see PATCHES)

SCHEMA = "exchange"
MAX_AMOUNT_VALUE = 2 ** 52   # Taler's TALER_AMOUNT_MAX_VALUE
AMOUNT_FRAC_BASE = 100_000_000

# taler-ops' bookkeeping (role, sync state) lives in schema taler_ops (schema/bookkeeping.py).
ROLES = bookkeeping.ROLES


def amount_units(expr: str) -> str:
    """SQL numeric of a taler_amount expression in 1e-8 units (exact; NULL stays NULL)."""
    return f"(({expr}).val::numeric * {AMOUNT_FRAC_BASE} + ({expr}).frac)"


@dataclass(frozen=True)
class Patch:
    name: str
    requires: Tuple[str, ...] = ()
    conflicts: Tuple[str, ...] = ()


# The model's patches, in order (names: schema/spec.py).  PATCH_PREFIX is what
# versioning looks up in _v.patches for this flavour of the schema.
PATCHES = (Patch(FIRST_PATCH), Patch(KYC_AUTH_PATCH, requires=(FIRST_PATCH,)))
assert all(p.name.startswith(PATCH_PREFIX) for p in PATCHES)


def _q(name: str) -> str:
    return '"' + name.replace('"', '""') + '"'


def _column_sql(col: Column) -> str:
    parts = [_q(col.name), col.sql_type]
    if col.default and col.default.startswith("GENERATED"):
        parts.append(col.default)
    elif col.default is not None:
        parts.append("DEFAULT " + col.default)
    if not col.nullable:
        parts.append("NOT NULL")
    # Only the CHECKs Taler has: amounts are range-checked by the sync's row
    # rules (sync/validate.py), not by the schema, as in Taler.
    checks = []
    if col.length is not None:
        checks.append(f"LENGTH({_q(col.name)}) = {col.length}")
    if col.check:
        checks.append(col.check)
    parts += [f"CHECK ({c})" for c in checks]
    return " ".join(parts)


def _cols(names: Iterable[str]) -> str:
    return ", ".join(_q(n) for n in names)


def _born_with_table(col: Column, table: Table) -> bool:
    """A column older than its table (the default ``since``) is created with it."""
    return col.since <= table.since


def _create_table(table: Table, partitions: int | None) -> list[str]:
    qualified = f"{SCHEMA}.{_q(table.name)}"
    body = [_column_sql(c) for c in table.columns if _born_with_table(c, table)]
    partition_key = table.partition_key if partitions is not None else None
    partitioned = partition_key is not None
    on_master = list(table.master_keys)
    inline: list[tuple[KeyKind, Tuple[str, ...]]] = []
    twins: list[tuple[KeyKind, Tuple[str, ...]]] = []
    key_on_parts: list[tuple[KeyKind, Tuple[str, ...]]] = []
    for kind, cols in table.keys:
        if partitioned:
            if cols in table.unpartitioned_only_keys:
                continue    # Taler adds it with a "foreign" action, which -P skips
            if cols not in on_master:
                # Added by Taler's "constrain" action: on every partition only.
                key_on_parts.append((kind, cols))
                continue
            on_master.remove(cols)      # declared in Taler's CREATE TABLE
        # CREATE TABLE silently merges a key equal to an earlier one; Taler has such
        # twins (added later by ALTER TABLE), so they are added the same way.
        (twins if any(c == cols for _, c in inline) else inline).append((kind, cols))
    body += [f"{kind} ({_cols(cols)})" for kind, cols in inline]
    stmt = f"CREATE TABLE {qualified} (\n    " + ",\n    ".join(body) + "\n)"
    if partition_key is not None:
        stmt += f" PARTITION BY HASH ({_q(partition_key)})"
    out = [stmt] + [f"ALTER TABLE {qualified} ADD {kind} ({_cols(cols)})" for kind, cols in twins]
    if table.comment:
        out.append(f"COMMENT ON TABLE {qualified} IS '" + table.comment.replace("'", "''") + "'")
    if partitions is None or partition_key is None:    # not partitioned
        return out
    if partitions == 0:
        parts = [(f"{table.name}_default", 1, 0)]
    else:
        parts = [(f"{table.name}_{i + 1}", partitions, i) for i in range(partitions)]
    for part, modulus, remainder in parts:
        out.append(f"CREATE TABLE {SCHEMA}.{_q(part)} PARTITION OF {qualified} "
                   f"FOR VALUES WITH (MODULUS {modulus}, REMAINDER {remainder})")
        for kind, cols in key_on_parts:
            out.append(f"ALTER TABLE {SCHEMA}.{_q(part)} ADD {kind} ({_cols(cols)})")
    return out


def _index_fk_columns(table: Table) -> list[str]:
    """Index FK columns that no key starts with: GC cascades and child look-ups need it."""
    keys = [k for _, k in table.keys]
    out = []
    for fk in table.foreign_keys:
        if any(k[:len(fk.columns)] == fk.columns for k in keys):
            continue
        name = f"{table.name}_by_{'_'.join(fk.columns)}"
        out.append(f"CREATE INDEX {_q(name)} ON {SCHEMA}.{_q(table.name)} ({_cols(fk.columns)})")
    return out


def _foreign_keys(table: Table, inline_only: bool = False) -> list[str]:
    return [
        f"ALTER TABLE {SCHEMA}.{_q(table.name)} ADD FOREIGN KEY ({_cols(fk.columns)}) "
        f"REFERENCES {SCHEMA}.{_q(fk.table)} ({_cols(fk.ref_columns)}) ON DELETE {fk.on_delete}"
        for fk in table.foreign_keys if fk.inline or not inline_only]


def _model_types() -> list[str]:
    """Types and functions Taler's patches define that the model's tables use."""
    return [
        # Taler's GNUnet hash code domain (32 bytes, as Taler declares it).
        f"CREATE DOMAIN {SCHEMA}.gnunet_hashcode AS BYTEA CHECK (LENGTH(VALUE) = 32)",
        # wire_targets.access_token's default, as Taler's exchange-0005 defines it:
        # n random bytes.  Same name and signature; the body is the model's own.
        f"""CREATE FUNCTION {SCHEMA}.random_bytea(bytea_length INT4) RETURNS BYTEA
LANGUAGE sql VOLATILE AS $$
    SELECT COALESCE(string_agg(set_byte('\\x00'::bytea, 0, floor(random() * 256)::int4), ''
                               ::bytea), ''::bytea)
      FROM generate_series(1, bytea_length)
$$""",
    ]


def _preamble() -> list[str]:
    return [
        f"CREATE SCHEMA {SCHEMA}",
        f"COMMENT ON SCHEMA {SCHEMA} IS 'GNU Taler exchange database (taler-ops)'",
        f"CREATE TYPE {SCHEMA}.taler_amount AS (val INT8, frac INT4)",
        f"COMMENT ON TYPE {SCHEMA}.taler_amount IS "
        "'Amount: val units plus frac/100000000 units of the currency'",
    ]


def render(patch_name: str, partitions: int | None = None, foreign_keys: bool = True,
           inline_foreign_keys: bool | None = None) -> list[str]:
    """The statements of one exchange patch, in order.

    ``inline_foreign_keys``: create the foreign keys Taler declares inline (on
    never-partitioned tables) even under -P, as Taler does; default: when
    ``foreign_keys`` or partitioned.
    """
    if inline_foreign_keys is None:
        inline_foreign_keys = foreign_keys or partitions is not None
    out: list[str] = []
    if patch_name == FIRST_PATCH:
        out += _preamble()
        out += _model_types()
    new_tables = [t for t in TABLES if t.since == patch_name]
    for table in new_tables:
        out += _create_table(table, partitions)
    for table in TABLES:
        if table.since == patch_name:
            continue
        for col in table.columns:
            if col.since == patch_name and not _born_with_table(col, table):
                out.append(f"ALTER TABLE {SCHEMA}.{_q(table.name)} ADD COLUMN {_column_sql(col)}")
    for table in new_tables:
        out += _index_fk_columns(table)
    if partitions is None and foreign_keys:
        for table in new_tables:
            out += _foreign_keys(table)
    elif inline_foreign_keys:
        for table in new_tables:
            out += _foreign_keys(table, inline_only=True)
    return out
