"""The audit's run history (``taler_ops.audit_runs``): what the report's time charts draw.

Taler's report tables carry no timestamps, so findings and losses over time
cannot be read back from them.  Each complete audit run therefore records, in
the transaction of its last check (a crash leaves both or neither), the
figures the report's summary shows at that moment: unsuppressed findings per
report table, suppressed ones, the loss / risk / at-issue totals (the same
measures as report_spec), fee revenue, the progress points, the rows it
examined and, on a safe copy, what it saw of the sync.

Bounded: a run that changes none of the counts or totals and starts within
``MERGE_SECONDS`` of the row it would follow is merged into that row (``runs``
+ 1), so an idle continuous audit writes about one row a minute; rows whose
end is older than ``KEEP_DAYS`` are deleted, and at most ``KEEP_ROWS`` stay.

The auditor database of whoever else fills Taler's tables (Taler's own helpers)
has no rows here; the report then says so.
"""

import datetime
import json
from collections.abc import Callable
from decimal import Decimal
from typing import Any, TypedDict

from psycopg import sql

from . import report_spec as spec
from .common import Conn, one_row, scalar
from ..schema.auditor_schema import AUDIT_RUNS

MERGE_SECONDS = 60
KEEP_DAYS = 35
KEEP_ROWS = 100_000

# Compared with the newest row to decide between a new row and a merge.
_STATE = ("findings_open", "findings_suppressed", "open_by_table", "loss_total", "risk_total",
          "at_issue_total", "fee_revenue")


class Figures(TypedDict):
    """What a history row records of the report's summary (1e-8 units for amounts)."""
    open_by_table: dict[str, int]
    findings_open: int
    findings_suppressed: int
    loss_total: int
    risk_total: int
    at_issue_total: int
    fee_revenue: int


def _columns(conn: Conn) -> dict[str, set[str]]:
    """{table: set(columns)} of schema auditor (pg_catalog: information_schema is slow,
    and this runs with every audit run)."""
    return {table: set(columns) for table, columns in conn.execute(
        "SELECT c.relname::text, array_agg(a.attname::text) FROM pg_catalog.pg_class c "
        "JOIN pg_catalog.pg_namespace n ON n.oid = c.relnamespace AND n.nspname = 'auditor' "
        "JOIN pg_catalog.pg_attribute a ON a.attrelid = c.oid AND a.attnum > 0 "
        "AND NOT a.attisdropped WHERE c.relkind IN ('r', 'p') GROUP BY 1")}


def figures(conn: Conn) -> Figures:
    """The report summary's counts and totals, read from the auditor database now.

    Same sections and measures as the report (report_spec), so a history point
    equals what ``taler-ops report`` would have shown at that moment.
    """
    have = _columns(conn)
    parts = []
    for sec in spec.SECTIONS:
        cols = have.get(sec.table, set())
        if not {"suppressed"} <= cols:
            continue
        sums: dict[str, list[sql.Composable]] = {spec.LOSS: [], spec.RISK: [], spec.ISSUE: []}
        for m in sec.measures:
            where = sql.SQL(m.where) if m.where else sql.SQL("TRUE")
            sums[m.category].append(sql.SQL(
                "coalesce(sum({e}) FILTER (WHERE NOT suppressed AND {w}), 0)").format(
                e=sql.SQL(m.expr), w=where))
        total: Callable[[list[sql.Composable]], sql.Composable] = \
            lambda xs: sql.SQL(" + ").join(xs) if xs else sql.SQL("0")
        parts.append(sql.SQL(
            "SELECT {t}, count(*) FILTER (WHERE NOT suppressed), "
            "count(*) FILTER (WHERE suppressed), ({l})::numeric, ({r})::numeric, ({i})::numeric "
            "FROM {tab}").format(t=sql.Literal(sec.table), l=total(sums[spec.LOSS]),
                                 r=total(sums[spec.RISK]), i=total(sums[spec.ISSUE]),
                                 tab=sql.Identifier("auditor", sec.table)))
    out: Figures = {"open_by_table": {}, "findings_open": 0, "findings_suppressed": 0,
                    "loss_total": 0, "risk_total": 0, "at_issue_total": 0, "fee_revenue": 0}
    if parts:
        for table, n_open, n_supp, loss, risk, issue in conn.execute(
                sql.SQL(" UNION ALL ").join(parts)):
            if n_open:
                out["open_by_table"][table] = n_open
            out["findings_open"] += n_open
            out["findings_suppressed"] += n_supp
            out["loss_total"] += int(loss)
            out["risk_total"] += int(risk)
            out["at_issue_total"] += int(issue)
    # The report adds the outstanding coins' recoup risk to the risk total.
    if "denom_risk" in have.get("auditor_denomination_pending", set()):
        out["risk_total"] += int(scalar(
            conn, f"SELECT coalesce(sum({spec.units('denom_risk')}), 0) "
            "FROM auditor.auditor_denomination_pending"))
    for key, value in conn.execute(
            f"SELECT balance_key, {spec.units('balance_value')} FROM auditor.auditor_balances "
            "WHERE balance_value IS NOT NULL"):
        if spec.balance_category(key) == "revenue":
            out["fee_revenue"] += int(value)
    return out


def sync_seen(ex: Conn) -> tuple[datetime.datetime | None, Decimal | None]:
    """(last copy time, rows beyond the audit's cut) of a safe copy's sync, from the
    run's own snapshot of the exchange database; (None, None) without sync state."""
    if not scalar(ex, "SELECT to_regclass('taler_ops.sync_watermarks') IS NOT NULL"):
        return None, None
    last_copy, beyond = one_row(ex, "SELECT max(updated_tsz), coalesce(sum(greatest(last_serial "
                                "- complete_serial, 0)), 0) FROM taler_ops.sync_watermarks")
    return last_copy, beyond


def record(conn: Conn, started: datetime.datetime, rows_examined: int,
           sync: tuple[datetime.datetime | None, Decimal | None] = (None, None)) -> str:
    """Add this run to the history, or merge it into the newest row; inside the
    caller's transaction (the audit's last check)."""
    now = figures(conn)
    progress = dict(conn.execute("SELECT progress_key, progress_offset "
                                 "FROM auditor.auditor_progress").fetchall())
    last = conn.execute(
        f"SELECT run_id, {', '.join(_STATE)}, started_tsz > %s - make_interval(secs => %s) "
        f"FROM {AUDIT_RUNS} ORDER BY run_id DESC LIMIT 1 FOR UPDATE",
        (started, MERGE_SECONDS)).fetchone()
    if last is not None and last[-1] and _same(last[1:-1], now):
        conn.execute(
            f"UPDATE {AUDIT_RUNS} SET ended_tsz = clock_timestamp(), runs = runs + 1, "
            "rows_examined = rows_examined + %s, progress = %s, sync_last_copy_tsz = %s, "
            "sync_rows_beyond_cut = %s WHERE run_id = %s",
            (rows_examined, json.dumps(progress), sync[0], sync[1], last[0]))
        return "merged"
    conn.execute(
        f"INSERT INTO {AUDIT_RUNS} (started_tsz, ended_tsz, rows_examined, {', '.join(_STATE)}, "
        "progress, sync_last_copy_tsz, sync_rows_beyond_cut) VALUES "
        "(%s, clock_timestamp(), %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s)",
        (started, rows_examined, now["findings_open"], now["findings_suppressed"],
         json.dumps(now["open_by_table"], sort_keys=True), now["loss_total"],
         now["risk_total"], now["at_issue_total"], now["fee_revenue"], json.dumps(progress),
         sync[0], sync[1]))
    # Pruned only when a row is added (at most about once a minute while idle).
    conn.execute(f"DELETE FROM {AUDIT_RUNS} WHERE ended_tsz < now() - make_interval(days => %s) "
                 f"OR run_id <= (SELECT max(run_id) - %s FROM {AUDIT_RUNS})",
                 (KEEP_DAYS, KEEP_ROWS))
    return "added"


def _same(row: tuple[Any, ...], now: Figures) -> bool:
    current: dict[str, object] = dict(now)
    return all((dict(v) if isinstance(v, dict) else int(v)) == current[k]
               for k, v in zip(_STATE, row))
