"""verify: did the ingres copy change or lose records the safe copy already holds?

Read-only on both servers.  For every replicated table it compares the copied
columns of the rows at or below the table's watermark: block digests first
(md5 over the ordered row digests of ``block_size`` serials, computed on each
server, so only digests cross the network), then the rows of differing blocks.

Columns the exchange changes after insert are never compared: mutable ones
are not copied at all, first-seen ones (registry ``first_seen_columns``) are
copied once and may legitimately differ upstream later.

Findings, per row:
- ``changed``               the row differs upstream (columns named);
- ``deleted-gc``            gone upstream, and Taler's GC rules (schema/gc.py) explain it;
- ``deleted-suspicious``    gone upstream, and no GC rule explains it;
- ``pending-in-hole``       upstream holds a row in an open hole (committed out of
                           serial order): the next sync pass copies it; not suspicious
- ``missing-on-safe-copy``  upstream holds a row below the watermark that the safe
                            copy lacks (a late commit with an older serial, or an
                            insertion into the past);
- ``gc-on-safe-copy``       as above, but the safe copy's own GC explains it.

Exit code of the CLI: 0 when nothing but GC deletions was found, 1 otherwise.
"""

from collections.abc import Callable, Collection, Iterator, Sequence
from typing import Any, NotRequired, TypedDict

import psycopg
from psycopg import IsolationLevel
from psycopg.rows import dict_row

from ..db import connect
from ..errors import ConfigError
from ..schema import gc, registry, state
from ..schema.registry import Entry
from .preflight import schema_problems
from .validate import q, qualified

DEFAULT_BLOCK = 10000
SUSPICIOUS = ("changed", "deleted-suspicious", "missing-on-safe-copy")

# A row as _fetch reads it (amounts as text).
Row = dict[str, Any]


class GcClock(TypedDict):
    """What Taler's GC compares dates with, in microseconds since the epoch."""

    now: int
    ancient: int        # ten years before now


class Finding(TypedDict):
    table: str
    serial: int
    kind: str
    detail: str
    columns: NotRequired[list[str]]     # "changed" only


class TableReport(TypedDict):
    watermark: int
    rows_checked: int
    blocks: int
    differing_blocks: int


class Report(TypedDict):
    tables: dict[str, TableReport]
    findings: list[Finding]
    summary: dict[str, int]         # findings per kind, however many the list holds
    truncated: bool
    not_copied: list[str]
    clean: bool


# Taler's GC rules as predicates on one row (see schema/gc.py for the statements).
_DIRECT: dict[str, Callable[[Row, GcClock], bool]] = {
    "wire_fee": lambda r, c: r["end_date"] < c["ancient"],
    "reserves": lambda r, c: r["gc_date"] < c["now"],
    "denominations": lambda r, c: r["expire_legal"] < c["now"],
    "batch_deposits": lambda r, c: r["wire_deadline"] < c["ancient"],
}
_BELOW_OLDEST = {
    "recoup": ("reserve_out_serial_id", "reserves_out"),
    "reserves_out": ("reserve_uuid", "reserves"),
    "refresh_revealed_coins": ("melt_serial_id", "refresh_commitments"),
    "refresh_transfer_keys": ("melt_serial_id", "refresh_commitments"),
    "recoup_refresh": ("known_coin_id", "known_coins"),
    "refunds": ("batch_deposit_serial_id", "batch_deposits"),
    "aggregation_tracking": ("batch_deposit_serial_id", "batch_deposits"),
    "coin_deposits": ("batch_deposit_serial_id", "batch_deposits"),
}


def _row_text(entry: Entry) -> str:
    # Only the final columns: a first-seen column (reserves.expiration_date,
    # auditors.is_active, ...) is changed by the exchange itself after insert.
    return f"md5(ROW({', '.join(q(c.name) for c in entry.compared_columns)})::text)"


def _open(uri: str, what: str) -> psycopg.Connection[Any]:
    conn: psycopg.Connection[Any] = connect(uri, what, autocommit=True)
    conn.execute("SET search_path TO pg_catalog, pg_temp")
    conn.execute("SET bytea_output TO hex")
    conn.autocommit = False
    conn.isolation_level = IsolationLevel.REPEATABLE_READ
    conn.read_only = True
    return conn


class _GcJudge:
    """Whether Taler's GC explains that a row is gone from the side ``conn``."""

    def __init__(self, conn: psycopg.Connection[Any], now_us: int) -> None:
        self.conn = conn
        self.ctx: GcClock = {"now": now_us, "ancient": now_us - gc.TEN_YEARS_US}
        self._oldest: dict[tuple[str, str], Any] = {}

    def _min(self, table: str, column: str) -> Any:
        key = (table, column)
        if key not in self._oldest:
            row = self.conn.execute(f"SELECT min({q(column)}) FROM {qualified(table)}").fetchone()
            assert row is not None      # an aggregate returns its one row
            self._oldest[key] = row[0]
        return self._oldest[key]

    def _exists(self, table: str, columns: Sequence[str], values: list[Any]) -> bool:
        cond = " AND ".join(f"{q(c)} = %s" for c in columns)
        row = self.conn.execute(f"SELECT EXISTS (SELECT 1 FROM {qualified(table)} WHERE {cond})",
                                values).fetchone()
        assert row is not None      # EXISTS returns its one row
        return bool(row[0])

    def reason(self, entry: Entry, row: Row) -> str | None:
        rule = _DIRECT.get(entry.name)
        if rule and rule(row, self.ctx):
            return f"{entry.name} GC rule"
        if entry.name in _BELOW_OLDEST:
            column, parent = _BELOW_OLDEST[entry.name]
            oldest = self._min(parent, column)
            if oldest is None or row[column] < oldest:
                return f"below the oldest {parent}.{column}"
        for fk in entry.parents:
            if fk.on_delete != "CASCADE":
                continue
            values = [row[c] for c in fk.columns]
            if None in values:
                continue
            if not self._exists(fk.table, fk.ref_columns, values):
                return f"cascade: its {fk.table} row is gone too"
        return None


def verify(src_uri: str, dst_uri: str, block_size: int = DEFAULT_BLOCK, now_us: int | None = None,
           max_findings: int = 1000, tables: Collection[str] | None = None) -> Report:
    if block_size < 1:
        raise ConfigError("the block size must be at least 1", exit_code=2)
    now_us = now_us if now_us is not None else gc.current_time_us()
    src = _open(src_uri, "verify source (ingres) database")
    try:
        dst = _open(dst_uri, "verify safe copy database")
        try:
            return _verify(src, dst, block_size, now_us, max_findings, tables)
        finally:
            dst.close()
    finally:
        src.close()


def _verify(src: psycopg.Connection[Any], dst: psycopg.Connection[Any], block_size: int,
            now_us: int, max_findings: int, tables: Collection[str] | None) -> Report:
    for conn, what in ((src, "verify source"), (dst, "safe copy")):
        state.assert_exchange_current(conn, what)
    setup = state.read_setup(dst)
    role = setup.role if setup is not None else None
    if role != "safe-copy":
        raise ConfigError(f"the destination database was created as {role!r}, not 'safe-copy'")
    marks: dict[str, int] = {}
    copied: dict[str, int] = {}
    for name, last, rows in dst.execute(
            "SELECT table_name, last_serial, rows_copied FROM taler_ops.sync_watermarks"):
        marks[name], copied[name] = last, rows
    holes: dict[str, list[tuple[int, int]]] = {}
    has_holes = dst.execute("SELECT to_regclass('taler_ops.sync_holes') IS NOT NULL").fetchone()
    if has_holes is not None and has_holes[0]:
        for name, lo, hi in dst.execute(
                "SELECT table_name, lo, hi FROM taler_ops.sync_holes WHERE expired_tsz IS NULL"):
            holes.setdefault(name, []).append((lo, hi))
    upstream_gc, local_gc = _GcJudge(src, now_us), _GcJudge(dst, now_us)
    # Columns of a newer Taler release that the registry does not know: not copied,
    # not compared; said, so that a clean verdict does not claim them.
    extras = schema_problems(src, registry.REPLICATED)[1]
    src.rollback()
    report: Report = {"tables": {}, "findings": [], "summary": {}, "truncated": False,
                      "not_copied": sorted(f"{table}.{msg.rsplit(' ', 1)[-1]}"
                                           for table, msg in extras),
                      "clean": False}     # the verdict, once every table was compared
    for entry in registry.REPLICATED:
        if tables is not None and entry.name not in tables:
            continue
        wm = marks.get(entry.name, 0)
        info: TableReport = {"watermark": wm, "rows_checked": 0, "blocks": 0, "differing_blocks": 0}
        report["tables"][entry.name] = info
        if wm <= 0:
            continue
        s = q(entry.serial)
        # Serials below 1 (never handed out by the exchange) form block -1.
        digest_sql = (f"SELECT CASE WHEN {s} < 1 THEN -1 ELSE ({s} - 1) / %(b)s END AS blk, "
                      f"count(*), "
                      f"md5(string_agg({_row_text(entry)}, '' ORDER BY {s})) "
                      f"FROM {qualified(entry.name)} WHERE {s} <= %(wm)s GROUP BY 1")
        params = {"b": block_size, "wm": wm}
        a = {blk: (n, d) for blk, n, d in src.execute(digest_sql, params).fetchall()}
        b = {blk: (n, d) for blk, n, d in dst.execute(digest_sql, params).fetchall()}
        info["blocks"] = len(set(a) | set(b))
        info["rows_checked"] = sum(n for n, _ in b.values())
        differing = sorted(k for k in set(a) | set(b) if a.get(k) != b.get(k))
        info["differing_blocks"] = len(differing)
        # Only if the safe copy holds fewer rows than the sync ever wrote to it can
        # its own GC explain a row it lacks; otherwise that row was never copied.
        deleted_here = copied.get(entry.name, 0) - info["rows_checked"]
        for blk in differing:
            for finding in _drill(entry, src, dst, blk, block_size, wm, upstream_gc,
                                  local_gc if deleted_here > 0 else None,
                                  holes.get(entry.name, ())):
                # The cap shortens the list only: every finding is counted, so the
                # verdict below sees a suspicious row however many come before it.
                report["summary"][finding["kind"]] = report["summary"].get(finding["kind"], 0) + 1
                if len(report["findings"]) >= max_findings:
                    report["truncated"] = True
                else:
                    report["findings"].append(finding)
    report["clean"] = not any(report["summary"].get(k) for k in SUSPICIOUS)
    src.rollback()
    dst.rollback()
    return report


def _drill(entry: Entry, src: psycopg.Connection[Any], dst: psycopg.Connection[Any], blk: int,
           block_size: int, wm: int, upstream_gc: _GcJudge, local_gc: _GcJudge | None,
           holes: Sequence[tuple[int, int]] = ()) -> Iterator[Finding]:
    s = q(entry.serial)
    lo: int | None
    if blk < 0:
        lo, hi = None, 0
    else:
        lo, hi = blk * block_size, min((blk + 1) * block_size, wm)
    rows_sql = (f"SELECT {s}, {_row_text(entry)} FROM {qualified(entry.name)} "
                f"WHERE ({s} > %s::int8 OR %s::int8 IS NULL) AND {s} <= %s ORDER BY {s}")
    a = dict(src.execute(rows_sql, (lo, lo, hi)).fetchall())
    b = dict(dst.execute(rows_sql, (lo, lo, hi)).fetchall())
    for serial in sorted(set(a) | set(b)):
        if a.get(serial) == b.get(serial):
            continue
        if serial not in a:
            row = _fetch(dst, entry, serial)
            why = upstream_gc.reason(entry, row)
            yield {"table": entry.name, "serial": serial,
                   "kind": "deleted-gc" if why else "deleted-suspicious",
                   "detail": why or "deleted upstream; no GC rule explains it"}
        elif serial not in b and any(lo < serial < hi for lo, hi in holes):
            # Committed out of order: the sync's next pass copies it (not suspicious).
            yield {"table": entry.name, "serial": serial, "kind": "pending-in-hole",
                   "detail": "present upstream in an open hole; the next sync pass copies it"}
        elif serial not in b:
            row = _fetch(src, entry, serial)
            why = local_gc.reason(entry, row) if local_gc and serial >= 1 else None
            yield {"table": entry.name, "serial": serial,
                   "kind": "gc-on-safe-copy" if why else "missing-on-safe-copy",
                   "detail": why or "present upstream below the watermark but never copied"}
        else:
            old, new = _fetch(dst, entry, serial), _fetch(src, entry, serial)
            cols = [c.name for c in entry.compared_columns if old[c.name] != new[c.name]]
            yield {"table": entry.name, "serial": serial, "kind": "changed",
                   "detail": "changed upstream: " + ", ".join(cols), "columns": cols}


def _fetch(conn: psycopg.Connection[Any], entry: Entry, serial: int) -> Row:
    cols = ", ".join(f"{q(c.name)}::text AS {q(c.name)}" if c.is_amount else q(c.name)
                     for c in entry.copy_columns)
    with conn.cursor(row_factory=dict_row) as cur:
        row = cur.execute(f"SELECT {cols} FROM {qualified(entry.name)} WHERE {q(entry.serial)} = %s"
                          f" LIMIT 1", (serial,)).fetchone()
    assert row is not None      # the serial was just read in this snapshot
    return row

