"""Small, valid, FK-consistent exchange histories for the sync tests and benchmark.

Derived from the registry: row ``i`` of every replicated table references row
``i`` of each parent table, keys are distinct per row, derived hashes follow
schema/hashing.py, and mutable columns hold non-default values (the safe copy must
end up with the defaults instead).  ``populate(uri, n, start)`` appends rows
``start .. start+n-1`` of every table, so a history can be extended later.
"""

import hashlib

import psycopg

from taler_ops.schema import hashing, registry
from taler_ops.schema.exchange_tables import TABLES
from taler_ops.schema.spec import HASHCODE

SPECS = {t.name: t for t in TABLES}
BASE_TIME = 1_700_000_000_000_000


def _bytes(label, n):
    out = b""
    counter = 0
    while len(out) < n:
        out += hashlib.sha512(f"{label}/{counter}".encode()).digest()
        counter += 1
    return out[:n]


def _mutable_value(col):
    if col.sql_type == "boolean":
        return "t" if (col.default or "").upper() != "TRUE" else "f"
    if col.is_amount:
        return "(99,1)"
    if col.sql_type in ("bigint", "integer", "smallint"):
        return 77
    if col.sql_type == "bytea":
        return _bytes("mutable", col.length or 8)
    return "mutated"


def value(table, column, i):
    """Row i's value of table.column (Python value for text-format COPY)."""
    spec = SPECS[table]
    col = spec.column(column)
    if column == spec.serial:
        return i
    for fk in spec.foreign_keys:
        if column in fk.columns and fk.table != table:
            ref = fk.ref_columns[fk.columns.index(column)]
            return value(fk.table, ref, i)
    for d in spec.derived:
        if d.column == column:
            # A parent-dependent rule reads row i of the parent (row i references it).
            parent = None if d.parent is None else value(d.parent[1], d.parent[3], i)
            return hashing.compute(d.rule, value(table, d.source, i), parent)
    label = f"{table}.{column}.{i}"
    if col.sql_type == HASHCODE:
        return _bytes(label, 32)
    if col.sql_type == HASHCODE + "[]":
        return [_bytes(label, 32)]
    if col.sql_type == "bytea":
        return _bytes(label, col.length or 16)
    if col.is_amount:
        return f"({i % 1000},{(i * 7919) % 100_000_000})"
    if col.sql_type == "text":
        if column == "payto_uri":
            return f"payto://x-taler-bank/bank.example/Acct{table}{i}?receiver-name=Name{i}"
        return f"{column}-{i}"
    if col.sql_type == "boolean":
        return "t" if i % 2 else "f"
    if col.sql_type == "smallint":
        return i % 6
    if col.sql_type == "integer":
        return i % 1_000_000
    return BASE_TIME + i


def rows(table, start, count, with_mutable=True):
    spec = SPECS[table]
    cols = [c for c in spec.columns if with_mutable or not c.mutable]
    for i in range(start, start + count):
        yield [(_mutable_value(c) if c.mutable else value(table, c.name, i)) for c in cols]


def populate(uri, count, start=1, tables=None, with_mutable=True):
    """Append rows start..start+count-1 to every replicated table (registry order)."""
    with psycopg.connect(uri) as conn:
        # Rows reach an ingres copy by replication, whose apply worker runs as a replica:
        # Taler's own triggers (reserve_history, coin_history, ...) and foreign keys do
        # not fire.  These rows are consistent among the replicated tables only.
        conn.execute("SET session_replication_role = replica")
        for entry in registry.REPLICATED:
            if tables is not None and entry.name not in tables:
                continue
            spec = SPECS[entry.name]
            cols = [c.name for c in spec.columns if with_mutable or not c.mutable]
            collist = ", ".join(f'"{c}"' for c in cols)
            with conn.cursor().copy(f'COPY exchange."{entry.name}" ({collist}) FROM STDIN') as cp:
                for row in rows(entry.name, start, count, with_mutable):
                    cp.write_row(row)
    return count * len(registry.REPLICATED)
