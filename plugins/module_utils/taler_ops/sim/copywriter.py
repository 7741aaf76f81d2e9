"""Binary COPY into the exchange tables, with serials assigned by the writer.

The generator needs every serial before the row is written (children name
their parents by serial), so the writer hands them out itself, starting above
whatever the table and its identity sequence already hold, and moves each
sequence past them when it flushes, so that the exchange's own inserts (and a
later generator run) continue without collisions.

Rows are tuples in the column order the caller names (an explicit column
list per table, so the same writer fills a model database and one built from
Taler's own files, which has more tables and columns than the model writes);
derived hash columns may be passed as None and are filled in here by the
registry's rule (parent-dependent ones from the parent rows already written
or added), so the generator cannot get a hash rule wrong.  Amounts are plain
ints of 1e-8 units; gnunet_hashcode[] values are lists of bytes.
"""

import struct
import threading
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import psycopg
from psycopg import pq, sql
from psycopg.adapt import Dumper
from psycopg.types import TypeInfo
from psycopg.types.string import BytesBinaryDumper

from ..schema import hashing
from ..schema.exchange_schema import AMOUNT_FRAC_BASE, MAX_AMOUNT_VALUE
from ..errors import TalerOpsError
from ..schema.exchange_tables import TABLES
from ..schema.spec import HASHCODE, Column, Rule, Table
from ..schema.registry import REPLICATED

SCHEMA = "exchange"
_TYPE_NAMES = {"bigint": "int8", "integer": "int4", "smallint": "int2", "bytea": "bytea",
               "text": "text", "boolean": "bool"}

# taler_amount in PostgreSQL's binary record format: 2 fields, (int8 val), (int4 frac).
_AMOUNT = struct.Struct("!iIiqIii")
_INT8_OID, _INT4_OID = 20, 23

# A row: its values in the order of the writer's column list for the table.
Row = tuple[Any, ...]
# A derived column's rule: (its index, rule, source index, parent-dependent part:
# (index of the column naming the parent, (parent table, key column, value column))).
ParentLookup = tuple[str, str, str]
DerivedRule = tuple[int, Rule, int, tuple[int, ParentLookup] | None]


def amount_record(units: int) -> bytes:
    val, frac = divmod(units, AMOUNT_FRAC_BASE)
    if units < 0 or val > MAX_AMOUNT_VALUE:
        raise ValueError(f"amount of {units} units is outside Taler's range")
    return _AMOUNT.pack(2, _INT8_OID, 8, val, _INT4_OID, 4, frac)


def _amount_dumper(oid: int) -> type[Dumper]:
    cache: dict[int, bytes] = {}

    class AmountBinaryDumper(Dumper):
        format = pq.Format.BINARY

        def dump(self, obj: Any) -> bytes:
            out = cache.get(obj)
            if out is None:
                out = amount_record(obj)
                if len(cache) < 100_000:
                    cache[obj] = out
            return out

    AmountBinaryDumper.oid = oid
    return AmountBinaryDumper


def _hashcode_array_dumper(array_oid: int, element_oid: int) -> type[Dumper]:
    """gnunet_hashcode[] in PostgreSQL's binary array format.

    array_recv insists that the element type named in the data is the column's
    element type, here the domain exchange.gnunet_hashcode (not bytea).
    """
    header = struct.Struct("!iiIii")

    class HashcodeArrayBinaryDumper(Dumper):
        format = pq.Format.BINARY

        def dump(self, obj: Any) -> bytes:
            out = [header.pack(1, 0, element_oid, len(obj), 1)]
            for item in obj:
                out.append(struct.pack("!i", len(item)) + bytes(item))
            return b"".join(out)

    HashcodeArrayBinaryDumper.oid = array_oid
    return HashcodeArrayBinaryDumper


def register_hashcode(conn: psycopg.Connection[Any]) -> tuple[int, int]:
    """(oid of exchange.gnunet_hashcode, oid of its array type), dumper registered."""
    row = conn.execute("SELECT t.oid, t.typarray FROM pg_type t JOIN pg_namespace n "
                       "ON n.oid = t.typnamespace WHERE n.nspname = 'exchange' "
                       "AND t.typname = 'gnunet_hashcode'").fetchone()
    if row is None:
        raise LookupError("domain exchange.gnunet_hashcode does not exist")
    conn.adapters.register_dumper(None, _hashcode_array_dumper(row[1], row[0]))
    return row[0], row[1]


def register_amount(conn: psycopg.Connection[Any]) -> int:
    """Let COPY write ints of 1e-8 units into exchange.taler_amount columns."""
    info = TypeInfo.fetch(conn, "exchange.taler_amount")
    if info is None:
        raise LookupError("type exchange.taler_amount does not exist")
    conn.adapters.register_dumper(None, _amount_dumper(info.oid))
    # psycopg's DB-API Binary wrapper dumper claims bytea by oid; COPY only ever
    # gets bytes, so put the (C-accelerated) plain bytes dumper back.
    conn.adapters.register_dumper(bytes, BytesBinaryDumper)
    return info.oid


def _check_columns(table: Table, names: Sequence[str]) -> None:
    """The rows must name real columns and leave out only what has a default."""
    spec = {c.name: c for c in table.columns}
    unknown = [n for n in names if n not in spec]
    if unknown:
        raise ValueError(f"{table.name}: the generator writes unknown column(s) {unknown}")
    missing = [c.name for c in table.columns
               if c.name not in names and not c.nullable and c.default is None]
    if missing or table.serial not in names:
        raise ValueError(f"{table.name}: the generator does not write required column(s) "
                         f"{missing or [table.serial]}")


class ForeignKeyViolation(TalerOpsError):
    """A generated row names a parent that does not exist (a generator bug)."""


def may_skip_fk_triggers(conn: psycopg.Connection[Any]) -> bool:
    """True if this session may set session_replication_role (superuser, or granted)."""
    row = conn.execute("SELECT current_setting('is_superuser') = 'on'").fetchone()
    assert row is not None, "a SELECT without FROM returns one row"
    if row[0]:
        return True
    if conn.info.server_version >= 150000:
        row = conn.execute(
            "SELECT has_parameter_privilege('session_replication_role', 'SET')").fetchone()
        assert row is not None, "a SELECT without FROM returns one row"
        return bool(row[0])
    return False


class CopyWriter:
    """Buffers rows per table and writes them with one binary COPY per table."""

    # Parents first (registry order), but known_coins right after its only parent:
    # on a Taler-built database, Taler's insert triggers on reserves_open_deposits
    # (which has no FK to known_coins itself) add coin_history rows that do.
    ORDER = tuple(e.name for e in REPLICATED) + tuple(
        t.name for t in TABLES if not t.replicated)
    ORDER = ORDER[:ORDER.index("denominations") + 1] + ("known_coins",) + tuple(
        n for n in ORDER[ORDER.index("denominations") + 1:] if n != "known_coins")

    def __init__(self, conn: psycopg.Connection[Any],
                 columns: Mapping[str, Sequence[str]] | None = None, fk_check: str = "triggers"):
        """``columns``: {table: column names in row order}; default all of the spec's.

        ``fk_check``: "triggers" lets the server's foreign-key triggers check every
        row as COPY inserts it; "set" switches them off for the COPY
        (session_replication_role, superuser only) and checks each chunk's new rows
        with one anti-join per foreign key instead, before the chunk commits.  Half
        of the server's work in a bulk load is the per-row trigger; the anti-join
        costs a fraction of it and rejects the same rows.
        """
        if fk_check not in ("triggers", "set"):
            raise ValueError(f"fk_check must be 'triggers' or 'set', not {fk_check!r}")
        self.conn = conn
        self.fk_check = fk_check
        self.specs = {t.name: t for t in TABLES}
        amount_oid = register_amount(conn)
        _, hashcode_array_oid = register_hashcode(conn)
        self.columns: dict[str, tuple[str, ...]] = {}
        self.oids: dict[str, list[int]] = {}
        self.derived: dict[str, tuple[DerivedRule, ...]] = {}
        registry = conn.adapters.types

        def oid(col: Column) -> int:
            if col.is_amount:
                return amount_oid
            if col.sql_type == HASHCODE + "[]":
                return hashcode_array_oid
            if col.sql_type == HASHCODE:
                return registry.get_oid("bytea")    # a domain is sent as its base type
            return registry.get_oid(_TYPE_NAMES[col.sql_type])

        # Parent-dependent rules (h_coin_ev needs its denomination's denom_pub_hash):
        # {(parent table, key column, value column): {key: value}}, from the
        # database and from every parent row added here.
        self.parent_values: dict[ParentLookup, dict[Any, Any]] = {}
        for t in TABLES:
            names = tuple(columns[t.name]) if columns and t.name in columns else tuple(
                c.name for c in t.columns)
            _check_columns(t, names)
            self.columns[t.name] = names
            self.oids[t.name] = [oid(c) for c in map(t.column, names)]
            rules: list[DerivedRule] = []
            for d in t.derived:
                parent: tuple[int, ParentLookup] | None = None
                if d.parent is not None:
                    local, ptable, pkey, pvalue = d.parent
                    parent = (names.index(local), (ptable, pkey, pvalue))
                    self.parent_values.setdefault((ptable, pkey, pvalue), {})
                rules.append((names.index(d.column), d.rule, names.index(d.source), parent))
            self.derived[t.name] = tuple(rules)
        self._load_parent_values()
        self.rows: dict[str, list[Row]] = {name: [] for name in self.ORDER}
        self.sequences: dict[str, str] = {}
        self.next_serial: dict[str, int] = {}
        self._load_serials()
        self.written = {name: 0 for name in self.ORDER}
        self.added = {name: 0 for name in self.ORDER}
        self.pending = 0
        self._thread: threading.Thread | None = None    # a flush_behind() under way
        self._error: BaseException | None = None        # what it failed with

    def _load_serials(self) -> None:
        parts = []
        for t in TABLES:
            parts.append(sql.SQL(
                "SELECT {name}, pg_get_serial_sequence({qual}, {col}), "
                "(SELECT COALESCE(max({colid}), 0) FROM {table})").format(
                    name=sql.Literal(t.name), qual=sql.Literal(f"{SCHEMA}.{t.name}"),
                    col=sql.Literal(t.serial), colid=sql.Identifier(t.serial),
                    table=sql.Identifier(SCHEMA, t.name)))
        rows = self.conn.execute(sql.SQL(" UNION ALL ").join(parts)).fetchall()
        for name, seq, top in rows:
            self.sequences[name] = seq
            state = self.conn.execute(
                sql.SQL("SELECT last_value, is_called FROM {}").format(
                    sql.Identifier(*seq.split(".", 1)))).fetchone()
            assert state is not None, "a sequence has one row"
            last, called = state
            self.next_serial[name] = max(top, last if called else last - 1) + 1

    def _load_parent_values(self) -> None:
        # table -> [(key index, value index, cache)]
        self.parent_sources: dict[str, list[tuple[int, int, dict[Any, Any]]]] = {}
        for (ptable, pkey, pvalue), cache in self.parent_values.items():
            cache.update(self.conn.execute(sql.SQL("SELECT {}, {} FROM {}").format(
                sql.Identifier(pkey), sql.Identifier(pvalue),
                sql.Identifier(SCHEMA, ptable))).fetchall())
            names = self.columns[ptable]
            self.parent_sources.setdefault(ptable, []).append(
                (names.index(pkey), names.index(pvalue), cache))

    def serial(self, table: str) -> int:
        value = self.next_serial[table]
        self.next_serial[table] = value + 1
        return value

    def peek_serial(self, table: str) -> int:
        return self.next_serial[table]

    def add(self, table: str, row: Row) -> None:
        derived = self.derived[table]
        if derived:
            values = list(row)
            for col, rule, src, parent in derived:
                if parent is None:
                    values[col] = hashing.compute(rule, values[src])
                else:
                    local, lookup = parent
                    values[col] = hashing.compute(rule, values[src],
                                                  self.parent_values[lookup][values[local]])
            row = tuple(values)
        for key_at, value_at, cache in self.parent_sources.get(table, ()):
            cache[row[key_at]] = row[value_at]
        self.rows[table].append(row)
        self.pending += 1
        self.added[table] += 1

    def counts(self) -> dict[str, int]:
        """Rows added so far (written or not yet), per table."""
        return dict(self.added)

    def _take(self) -> tuple[dict[str, list[Row]], dict[str, int]]:
        rows, self.rows = self.rows, {name: [] for name in self.ORDER}
        self.pending = 0
        return rows, dict(self.next_serial)

    def _write(self, rows: dict[str, list[Row]], next_serial: dict[str, int]) -> None:
        ranges = {}
        with self.conn.cursor() as cur:
            if self.fk_check == "set":
                cur.execute("SET LOCAL session_replication_role = replica")
            for table in self.ORDER:
                batch = rows[table]
                if not batch:
                    continue
                stmt = sql.SQL("COPY {} ({}) FROM STDIN (FORMAT BINARY)").format(
                    sql.Identifier(SCHEMA, table),
                    sql.SQL(", ").join(map(sql.Identifier, self.columns[table])))
                with cur.copy(stmt) as copy:
                    copy.set_types(self.oids[table])
                    write = copy.write_row
                    for row in batch:
                        write(row)
                cur.execute("SELECT setval(%s::regclass, %s)",
                            (self.sequences[table], next_serial[table] - 1))
                serial_at = self.columns[table].index(self.specs[table].serial)
                ranges[table] = (min(r[serial_at] for r in batch),
                                 max(r[serial_at] for r in batch))
            if self.fk_check == "set":
                cur.execute("SET LOCAL session_replication_role = origin")
                self._check_foreign_keys(cur, ranges)
        for table, batch in rows.items():
            self.written[table] += len(batch)

    def _check_foreign_keys(self, cur: psycopg.Cursor[Any],
                            ranges: dict[str, tuple[int, int]]) -> None:
        for table, (lo, hi) in ranges.items():
            spec = self.specs[table]
            for fk in spec.foreign_keys:
                match = sql.SQL(" AND ").join(
                    sql.SQL("p.{} = c.{}").format(sql.Identifier(r), sql.Identifier(c))
                    for c, r in zip(fk.columns, fk.ref_columns))
                present = sql.SQL(" AND ").join(
                    sql.SQL("c.{} IS NOT NULL").format(sql.Identifier(c)) for c in fk.columns)
                row = cur.execute(sql.SQL(
                    "SELECT c.{serial} FROM {child} c WHERE c.{serial} BETWEEN %s AND %s "
                    "AND {present} AND NOT EXISTS (SELECT 1 FROM {parent} p WHERE {match}) "
                    "ORDER BY 1 LIMIT 1").format(
                        serial=sql.Identifier(spec.serial),
                        child=sql.Identifier(SCHEMA, table), present=present,
                        parent=sql.Identifier(SCHEMA, fk.table), match=match),
                    (lo, hi)).fetchone()
                if row is not None:
                    raise ForeignKeyViolation(
                        f"{table} row {spec.serial}={row[0]} violates its foreign key "
                        f"({', '.join(fk.columns)}) -> {fk.table} "
                        f"({', '.join(fk.ref_columns)}): no such row")

    def flush(self) -> None:
        """COPY every buffered row (parents first) and advance the sequences; no commit."""
        self.wait()
        self._write(*self._take())

    def flush_behind(self, after: Callable[[], None] | None = None) -> None:
        """Write and commit the buffered rows in a thread while the caller makes more.

        The server checks and indexes one chunk while Python builds the next
        (psycopg releases the GIL while it waits on the socket).  The connection
        belongs to the thread until ``wait()``; ``after`` runs in it after commit.
        """
        self.wait()
        rows, next_serial = self._take()

        def run() -> None:
            try:
                self._write(rows, next_serial)
                self.conn.commit()
                if after is not None:
                    after()
            except BaseException as exc:  # handed to the caller by wait()
                self._error = exc

        self._thread = threading.Thread(target=run, name="taler-ops-copy", daemon=True)
        self._thread.start()

    def wait(self) -> None:
        """Wait for a flush_behind() and re-raise what it failed with."""
        if self._thread is not None:
            self._thread.join()
            self._thread = None
        error = self._error
        if error is not None:
            self._error = None
            raise error
