"""The sync's progress on the safe copy: watermarks, pass cuts and ``complete_serial``.

A table's watermark (``last_serial`` in ``taler_ops.sync_watermarks``) moves
with the batch that copied up to it, in the batch's transaction.  At the end of
a complete pass the watermarks of all tables are recorded as the pass's *cut*
(``taler_ops.sync_cuts``); a cut becomes the audit's ``complete_serial`` once
no hole open at its end can still be filled (holes.py), so the rows up to it
are exactly one snapshot of the exchange.
"""

from typing import Any

import psycopg
from psycopg.types.json import Jsonb

from ..schema import bookkeeping
from . import holes


def read(dst: psycopg.Connection[Any]) -> dict[str, int]:
    """{table: last_serial} of the tables copied so far."""
    rows = dst.execute(f"SELECT table_name, last_serial FROM {bookkeeping.WATERMARKS}").fetchall()
    return dict(rows)


def next_pass_id(dst: psycopg.Connection[Any]) -> int:
    # Above every cut and every hole, even when old cuts were pruned: a new cut
    # must never look older than a hole that was open before it.
    row = dst.execute(
        f"SELECT greatest((SELECT max(pass_id) FROM {bookkeeping.CUTS}), "
        f"(SELECT max(pass_id) FROM {bookkeeping.HOLES}), 0) + 1").fetchone()
    assert row is not None      # a SELECT without FROM returns its one row
    pass_id: int = row[0]
    return pass_id


def advance(dst: psycopg.Connection[Any], table: str, copied: int, last_serial: int | None) -> None:
    """Inside a batch's transaction: count its rows and move the watermark to ``last_serial``.

    ``last_serial`` None: the batch filled (part of) a hole below the
    watermark, which stays where it is.
    """
    if last_serial is not None:
        dst.execute(
            f"INSERT INTO {bookkeeping.WATERMARKS} AS w (table_name, last_serial,"
            " rows_copied) VALUES (%s, %s, %s) ON CONFLICT (table_name) DO UPDATE"
            " SET last_serial = EXCLUDED.last_serial,"
            " rows_copied = w.rows_copied + EXCLUDED.rows_copied, updated_tsz = now()",
            (table, last_serial, copied))
    else:
        dst.execute(
            f"INSERT INTO {bookkeeping.WATERMARKS} AS w (table_name, rows_copied) "
            "VALUES (%s, %s) ON CONFLICT (table_name) DO UPDATE"
            " SET rows_copied = w.rows_copied + EXCLUDED.rows_copied,"
            " updated_tsz = now()", (table, copied))


def end_pass(dst: psycopg.Connection[Any], tables: list[str], pass_id: int,
             clock: holes.SourceClock, hole_horizon: float) -> int:
    """Expire holes past their horizon, record this pass's cut, publish a consistent one.

    One transaction.  Returns the number of holes still open.
    """
    with dst.transaction():
        holes.expire(dst, tables, clock, hole_horizon)
        dst.execute(
            f"INSERT INTO {bookkeeping.WATERMARKS} (table_name) SELECT unnest(%s::text[]) "
            "ON CONFLICT (table_name) DO NOTHING", (tables,))
        dst.execute(
            f"INSERT INTO {bookkeeping.CUTS} (pass_id, cut) SELECT %s, "
            f"jsonb_object_agg(table_name, last_serial) FROM {bookkeeping.WATERMARKS} "
            "WHERE table_name = ANY(%s) ON CONFLICT (pass_id) DO NOTHING",
            (pass_id, tables))
        # The newest cut no open hole is older than, and no hole open then was filled.
        row = dst.execute(
            f"SELECT c.pass_id, c.cut FROM {bookkeeping.CUTS} c WHERE NOT c.spoiled "
            f"AND NOT EXISTS (SELECT 1 FROM {bookkeeping.HOLES} h WHERE h.expired_tsz IS NULL"
            " AND h.pass_id <= c.pass_id AND h.table_name = ANY(%s)) "
            "ORDER BY c.pass_id DESC LIMIT 1", (tables,)).fetchone()
        if row is not None:
            published, cut = row
            dst.execute(
                f"UPDATE {bookkeeping.WATERMARKS} w SET complete_serial = (%s::jsonb ->> "
                "w.table_name)::int8 WHERE w.table_name = ANY(%s) AND %s::jsonb ? w.table_name"
                " AND complete_serial IS DISTINCT FROM (%s::jsonb ->> w.table_name)::int8",
                (Jsonb(cut), tables, Jsonb(cut), Jsonb(cut)))
            dst.execute(f"DELETE FROM {bookkeeping.CUTS} WHERE pass_id < %s", (published,))
        # A spoiled cut can never be published again.
        dst.execute(f"DELETE FROM {bookkeeping.CUTS} WHERE spoiled")
        count = dst.execute(
            f"SELECT count(*) FROM {bookkeeping.HOLES} WHERE expired_tsz IS NULL").fetchone()
        assert count is not None    # an aggregate returns its one row
        open_holes: int = count[0]
        return open_holes
