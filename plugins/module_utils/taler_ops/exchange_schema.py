"""DDL of the exchange patches, rendered from the table specs.

A patch creates the tables whose ``since`` is that patch and adds the columns
whose ``since`` is that patch to older tables, so the specs stay the single
description of the schema.  With ``partitions`` (dbinit -P N) the tables that
have a partition key are hash-partitioned and no foreign keys are created, as
in Taler: NULL = plain tables with foreign keys, 0 = one default partition,
N >= 1 = N hash partitions.
"""

from dataclasses import dataclass
from typing import Tuple

from . import bookkeeping
from .exchange_tables import TABLES
from .spec import FIRST_PATCH, KYC_AUTH_PATCH

SCHEMA = "exchange"
MAX_AMOUNT_VALUE = 2 ** 52   # Taler's TALER_AMOUNT_MAX_VALUE
AMOUNT_FRAC_BASE = 100_000_000

# taler-ops' bookkeeping (role, sync state) lives in schema taler_ops (bookkeeping.py).
ROLES = bookkeeping.ROLES


def amount_units(expr):
    """SQL numeric of a taler_amount expression in 1e-8 units (exact; NULL stays NULL)."""
    return f"(({expr}).val::numeric * {AMOUNT_FRAC_BASE} + ({expr}).frac)"


@dataclass(frozen=True)
class Patch:
    name: str
    requires: Tuple[str, ...] = ()
    conflicts: Tuple[str, ...] = ()


PATCHES = (Patch(FIRST_PATCH), Patch(KYC_AUTH_PATCH, requires=(FIRST_PATCH,)))


def _q(name):
    return '"' + name.replace('"', '""') + '"'


def _column_sql(col):
    parts = [_q(col.name), col.sql_type]
    if col.default and col.default.startswith("GENERATED"):
        parts.append(col.default)
    elif col.default is not None:
        parts.append("DEFAULT " + col.default)
    if not col.nullable:
        parts.append("NOT NULL")
    checks = []
    if col.length is not None:
        checks.append(f"LENGTH({_q(col.name)}) = {col.length}")
    if col.is_amount:
        c = _q(col.name)
        null_ok = f"{c} IS NULL OR " if col.nullable else ""
        checks.append(f"{null_ok}(({c}).val IS NOT NULL AND ({c}).frac IS NOT NULL"
                      f" AND ({c}).val BETWEEN 0 AND {MAX_AMOUNT_VALUE}"
                      f" AND ({c}).frac BETWEEN 0 AND {AMOUNT_FRAC_BASE - 1})")
    if col.check:
        checks.append(col.check)
    parts += [f"CHECK ({c})" for c in checks]
    return " ".join(parts)


def _cols(names):
    return ", ".join(_q(n) for n in names)


def _keys(table):
    yield "PRIMARY KEY", table.primary_key
    for unique in table.uniques:
        yield "UNIQUE", unique


def _born_with_table(col, table):
    """A column older than its table (the default ``since``) is created with it."""
    return col.since <= table.since


def _create_table(table, partitions):
    qualified = f"{SCHEMA}.{_q(table.name)}"
    body = [_column_sql(c) for c in table.columns if _born_with_table(c, table)]
    partitioned = partitions is not None and table.partition_key is not None
    key_on_parts = []
    for kind, cols in _keys(table):
        # A partitioned table can only carry keys that contain the partition key;
        # the others go on every partition (as Taler's "constrain" action does).
        if partitioned and table.partition_key not in cols:
            key_on_parts.append((kind, cols))
        else:
            body.append(f"{kind} ({_cols(cols)})")
    stmt = f"CREATE TABLE {qualified} (\n    " + ",\n    ".join(body) + "\n)"
    if partitioned:
        stmt += f" PARTITION BY HASH ({_q(table.partition_key)})"
    out = [stmt]
    if table.comment:
        out.append(f"COMMENT ON TABLE {qualified} IS '" + table.comment.replace("'", "''") + "'")
    if not partitioned:
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


def _index_fk_columns(table):
    """Index FK columns that no key starts with: GC cascades and child look-ups need it."""
    keys = [k for _, k in _keys(table)]
    out = []
    for fk in table.foreign_keys:
        if any(k[:len(fk.columns)] == fk.columns for k in keys):
            continue
        name = f"{table.name}_by_{'_'.join(fk.columns)}"
        out.append(f"CREATE INDEX {_q(name)} ON {SCHEMA}.{_q(table.name)} ({_cols(fk.columns)})")
    return out


def _foreign_keys(table):
    return [
        f"ALTER TABLE {SCHEMA}.{_q(table.name)} ADD FOREIGN KEY ({_cols(fk.columns)}) "
        f"REFERENCES {SCHEMA}.{_q(fk.table)} ({_cols(fk.ref_columns)}) ON DELETE {fk.on_delete}"
        for fk in table.foreign_keys]


def _preamble():
    return [
        f"CREATE SCHEMA {SCHEMA}",
        f"COMMENT ON SCHEMA {SCHEMA} IS 'GNU Taler exchange database (taler-ops)'",
        f"CREATE TYPE {SCHEMA}.taler_amount AS (val INT8, frac INT4)",
        f"COMMENT ON TYPE {SCHEMA}.taler_amount IS "
        "'Amount: val units plus frac/100000000 units of the currency'",
    ]


def render(patch_name, partitions=None, foreign_keys=True):
    """The statements of one exchange patch, in order."""
    out = []
    if patch_name == FIRST_PATCH:
        out += _preamble()
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
    return out
