"""Reading the report's data: Taler's auditor database and the safe copy's sync state.

:func:`auditor_part` reads schema ``auditor`` (as Taler's auditor-0001/0002 build
it, whoever filled it) and taler-ops' run history into raw rows and per-section
parts; :func:`sync_part` reads the sync's bookkeeping (schema ``taler_ops``) of
the safe copy.  report.build_model turns both into the report's model.
"""

from decimal import Decimal
from typing import Any

import psycopg
from psycopg import sql

from . import report_spec as spec
from .common import one_row, scalar
from .report_model import (AuditorRaw, Cell, HistoryRows, LastAudit, MeasureTotal, Patch, Row,
                           SectionPart, SyncState)
from .report_values import amount, crockford, time_us, tstamp
from ..db import connect, describe
from ..errors import DatabaseNotReady


def _cell(kind: str, value: Any, currency: str | None) -> Cell:
    if value is None:
        return None
    if kind == "amount":
        return amount(Decimal(value), currency)
    if kind == "key":
        return crockford(bytes(value))
    if kind == "time":
        return time_us(int(value))
    if kind == "bool":
        return "yes" if value else "no"
    if kind == "int":
        return int(value)
    return str(value)


def _col_sql(col: spec.Col) -> sql.Composable:
    ident = sql.Identifier(col.name)
    if col.kind == "amount":
        return sql.SQL("CASE WHEN {c} IS NULL THEN NULL ELSE ({c}).val::numeric * 100000000 "
                       "+ ({c}).frac END").format(c=ident)
    return ident


def one_line(exc: BaseException) -> str:
    return " ".join(str(exc).split())


def _columns(conn: psycopg.Connection[Any]) -> dict[str, set[str]]:
    """{table: set(columns)} of schema auditor."""
    out: dict[str, set[str]] = {}
    for table, column in conn.execute(
            "SELECT table_name, column_name FROM information_schema.columns "
            "WHERE table_schema = 'auditor'").fetchall():
        out.setdefault(table, set()).add(column)
    return out


def _section(conn: psycopg.Connection[Any], sec: spec.Section, have: dict[str, set[str]],
             currency: str | None, since_mark: int | None, max_rows: int) -> SectionPart:
    part: SectionPart = {
        "table": sec.table, "title": sec.title, "helper": sec.helper, "what": sec.what,
        "columns": [{"name": c.name, "kind": c.kind, "label": c.label} for c in sec.columns],
        "open": 0, "suppressed": 0, "max_row_id": None, "measures": [], "rows": [],
        "suppressed_rows": [], "truncated": False}
    cols = have.get(sec.table)
    needed = {"row_id", "suppressed"} | {c.name for c in sec.columns}
    if cols is None:
        part["unavailable"] = f"table auditor.{sec.table} does not exist"
        return part
    if needed - cols:
        part["unavailable"] = (f"auditor.{sec.table} is not Taler's shape (no column "
                               f"{', '.join(sorted(needed - cols))})")
        return part
    table = sql.Identifier("auditor", sec.table)
    scope = sql.SQL("row_id > {}").format(sql.Literal(since_mark)) if since_mark is not None \
        else sql.SQL("TRUE")
    aggregates = [sql.SQL("count(*) FILTER (WHERE NOT suppressed AND {s})").format(s=scope),
                  sql.SQL("count(*) FILTER (WHERE suppressed AND {s})").format(s=scope),
                  sql.SQL("max(row_id)")]
    for m in sec.measures:
        where = sql.SQL(m.where) if m.where else sql.SQL("TRUE")
        aggregates.append(sql.SQL("coalesce(sum({e}) FILTER (WHERE NOT suppressed AND {s} AND "
                                  "{w}), 0)").format(e=sql.SQL(m.expr), s=scope, w=where))
    agg = one_row(conn, sql.SQL("SELECT {} FROM {}").format(
        sql.SQL(", ").join(aggregates), table))
    part["open"], part["suppressed"], part["max_row_id"] = agg[0], agg[1], agg[2]
    part["measures"] = [MeasureTotal(name=m.name, label=m.label, category=m.category,
                                     amount=amount(agg[3 + i], currency))
                        for i, m in enumerate(sec.measures)]
    select = sql.SQL("SELECT row_id, {} FROM {} WHERE {} AND suppressed = {} "
                     "ORDER BY row_id LIMIT {}")
    names = sql.SQL(", ").join(_col_sql(c) for c in sec.columns)
    for rows, flag in ((part["rows"], False), (part["suppressed_rows"], True)):
        for row in conn.execute(select.format(names, table, scope, sql.Literal(flag),
                                              sql.Literal(max_rows))).fetchall():
            entry: dict[str, Cell] = {"row_id": row[0]}
            for col, value in zip(sec.columns, row[1:]):
                entry[col.name] = _cell(col.kind, value, currency)
            rows.append(entry)
    part["truncated"] = (len(part["rows"]) < part["open"]
                         or len(part["suppressed_rows"]) < part["suppressed"])
    return part


def _sum(conn: psycopg.Connection[Any], have: dict[str, set[str]], table: str,
         exprs: list[str]) -> Row | None:
    if table not in have:
        return None
    return one_row(conn, sql.SQL("SELECT count(*), {} FROM {}").format(
        sql.SQL(", ").join(sql.SQL("coalesce(sum({}), 0)").format(sql.SQL(e)) for e in exprs),
        sql.Identifier("auditor", table)))


def _last_audit(conn: psycopg.Connection[Any]) -> LastAudit:
    """Commit time of the last write to auditor_progress, when the server records it.

    Taler's auditor schema holds no timestamp of a run; PostgreSQL has one with
    track_commit_timestamp = on (whoever wrote the progress points: any helper)."""
    if scalar(conn, "SELECT current_setting('track_commit_timestamp')") != "on":
        return {"time": None, "source": "not recorded: Taler's auditor schema keeps no time of "
                "a run; set track_commit_timestamp = on on the auditor database's server"}
    ts = scalar(conn, "SELECT max(pg_xact_commit_timestamp(xmin)) "
                      "FROM auditor.auditor_progress")
    if ts is None:
        return {"time": None, "source": "not recorded: no progress point was written since "
                "track_commit_timestamp was turned on"}
    return {"time": tstamp(ts), "source": "commit time of the last progress update"}


def auditor_part(conn: psycopg.Connection[Any], currency: str | None,
                 since: dict[str, int] | None, max_rows: int) -> AuditorRaw:
    """Everything the report shows from the auditor database; ``since``: per report
    table, the largest row_id of an earlier report (only later findings are listed)."""
    if not scalar(conn, "SELECT to_regnamespace('auditor') IS NOT NULL"):
        raise DatabaseNotReady("the auditor database has no schema auditor (run "
                               "taler-auditor-dbinit / taler-ops auditor-dbinit)")
    have = _columns(conn)
    patches: list[Patch] = []
    if scalar(conn, "SELECT to_regclass('_v.patches') IS NOT NULL"):
        patches = [{"name": n, "applied": tstamp(t), "by": b} for n, t, b in conn.execute(
            "SELECT patch_name, applied_tsz, applied_by FROM _v.patches ORDER BY patch_name")]
    patch_level = max((p["name"] for p in patches if p["name"].startswith("auditor-")),
                      default=None)
    missing = [t for t in ("auditor_progress", "auditor_balances") if t not in have]
    if missing:
        raise DatabaseNotReady(f"the auditor database is not Taler's auditor schema: no "
                               f"{', '.join('auditor.' + t for t in missing)}")
    progress = conn.execute("SELECT progress_key, progress_offset FROM "
                            "auditor.auditor_progress ORDER BY progress_key").fetchall()
    bal_value = "balance_value" if "balance_value" in have["auditor_balances"] else None
    if bal_value is None:
        raise DatabaseNotReady("the auditor database is not Taler's auditor schema: "
                               "auditor.auditor_balances has no balance_value")
    balances = conn.execute(
        "SELECT balance_key, CASE WHEN balance_value IS NULL THEN NULL ELSE "
        "(balance_value).val::numeric * 100000000 + (balance_value).frac END "
        "FROM auditor.auditor_balances ORDER BY balance_key").fetchall()
    last_audit = _last_audit(conn)
    sections = [_section(conn, sec, have, currency,
                         (since or {}).get(sec.table) if since else None, max_rows)
                for sec in spec.SECTIONS]
    u = spec.units
    pending: list[Row] = []
    historic: list[Row] = []
    reserve_summary: list[Row] = []
    if {"denom_pub_hash", "denom_balance", "denom_loss", "num_issued", "denom_risk",
            "recoup_loss"} <= have.get("auditor_denomination_pending", set()):
        pending = conn.execute(
            f"SELECT denom_pub_hash, {u('denom_balance')}, {u('denom_loss')}, num_issued, "
            f"{u('denom_risk')}, {u('recoup_loss')} FROM auditor.auditor_denomination_pending "
            "ORDER BY denom_pub_hash").fetchall()
    if {"denom_pub_hash", "revenue_timestamp", "revenue_balance", "loss_balance"} <= \
            have.get("auditor_historic_denomination_revenue", set()):
        historic = conn.execute(
            f"SELECT denom_pub_hash, revenue_timestamp, {u('revenue_balance')}, "
            f"{u('loss_balance')} FROM auditor.auditor_historic_denomination_revenue "
            "ORDER BY revenue_timestamp, denom_pub_hash").fetchall()
    if {"start_date", "end_date", "reserve_profits"} <= \
            have.get("auditor_historic_reserve_summary", set()):
        reserve_summary = conn.execute(
            f"SELECT start_date, end_date, {u('reserve_profits')} FROM "
            "auditor.auditor_historic_reserve_summary ORDER BY start_date").fetchall()
    reserves: Row | None = None
    purses: Row | None = None
    if {"reserve_balance", "reserve_loss", "withdraw_fee_balance", "close_fee_balance",
            "purse_fee_balance", "open_fee_balance", "history_fee_balance"} <= \
            have.get("auditor_reserves", set()):
        reserves = _sum(conn, have, "auditor_reserves", [
            u("reserve_balance"), u("reserve_loss"), u("withdraw_fee_balance"),
            u("close_fee_balance"), u("purse_fee_balance"), u("open_fee_balance"),
            u("history_fee_balance")])
    if {"balance", "target"} <= have.get("auditor_purses", set()):
        purses = _sum(conn, have, "auditor_purses", [u("balance"), u("target")])
    signkeys = (scalar(conn, "SELECT count(*) FROM auditor.auditor_exchange_signkeys")
                if "auditor_exchange_signkeys" in have else None)
    return {"patches": patches, "patch_level": patch_level, "progress": progress,
            "balances": balances, "last_audit": last_audit, "sections": sections,
            "pending": pending, "historic": historic, "reserve_summary": reserve_summary,
            "reserves": reserves, "purses": purses, "signkeys": signkeys,
            "history": _history(conn)}


HISTORY_POINTS = 400     # most points a time chart draws (and the JSON carries)


def _history(conn: psycopg.Connection[Any]) -> HistoryRows:
    """The audit's run history (taler_ops.audit_runs), thinned to HISTORY_POINTS rows.

    Only taler-ops' audit writes it; Taler's own helpers leave no trace of when
    they ran, so without it the report says so instead of drawing."""
    if not scalar(conn, "SELECT to_regclass('taler_ops.audit_runs') IS NOT NULL AND "
                        "has_table_privilege('taler_ops.audit_runs', 'SELECT')"):
        return {"rows": [], "recorded": 0, "reason": "no taler_ops.audit_runs: Taler's report "
                "tables keep no time; taler-ops' audit records its runs there (auditor-dbinit "
                "creates the table)"}
    rows = conn.execute(
        "SELECT run_id, started_tsz, ended_tsz, runs, rows_examined, findings_open, "
        "findings_suppressed, open_by_table, loss_total, risk_total, at_issue_total, "
        "fee_revenue, sync_last_copy_tsz, sync_rows_beyond_cut "
        "FROM taler_ops.audit_runs ORDER BY run_id").fetchall()
    recorded = len(rows)
    if recorded > HISTORY_POINTS:
        # Evenly spaced rows, always the first and the newest: every point drawn
        # is a recorded run, not an average.
        step = (recorded - 1) / (HISTORY_POINTS - 1)
        rows = [rows[round(i * step)] for i in range(HISTORY_POINTS)]
    return {"rows": rows, "recorded": recorded,
            "reason": None if rows else "no audit run recorded yet in taler_ops.audit_runs "
            "(an auditor database filled by Taler's own helpers has none)"}


def sync_part(exchange_uri: str) -> SyncState:
    """Watermarks, open holes and halts of the sync on the safe copy, if readable."""
    part: SyncState = {"available": False, "database": describe(exchange_uri)}
    try:
        with connect(exchange_uri, "safe copy") as conn:
            conn.read_only = True
            have: dict[str, list[str]] = dict(conn.execute(
                "SELECT c.relname, array_agg(a.attname::text) FROM pg_class c "
                "JOIN pg_namespace n ON n.oid = c.relnamespace AND n.nspname = 'taler_ops' "
                "JOIN pg_attribute a ON a.attrelid = c.oid AND a.attnum > 0 "
                "AND NOT a.attisdropped GROUP BY 1").fetchall())
            if "sync_watermarks" not in have:
                part["reason"] = "no taler_ops.sync_watermarks (the database is not a safe copy)"
                return part
            complete = "complete_serial" if "complete_serial" in have["sync_watermarks"] \
                else "NULL::int8"
            part["tables"] = [
                {"table": t, "last_serial": s, "complete_serial": c, "rows_copied": r,
                 "updated": tstamp(ts)}
                for t, s, c, r, ts in conn.execute(
                    f"SELECT table_name, last_serial, {complete}, rows_copied, updated_tsz "
                    "FROM taler_ops.sync_watermarks ORDER BY table_name")]
            part["last_sync"] = max((t["updated"] for t in part["tables"]), default=None)
            part["holes"] = []
            if "sync_holes" in have:
                part["holes"] = [{"table": t, "from": lo + 1, "to": hi - 1, "seen": tstamp(s)}
                                 for t, lo, hi, s in conn.execute(
                                     "SELECT table_name, lo, hi, seen_tsz FROM "
                                     "taler_ops.sync_holes WHERE expired_tsz IS NULL "
                                     "ORDER BY table_name, lo")]
            part["halts"], part["cleared_halts"] = [], 0
            if "sync_halts" in have:
                part["halts"] = [{"table": t, "serial": s, "rule": r, "message": m,
                                  "halted": tstamp(h)} for t, s, r, m, h in conn.execute(
                    "SELECT table_name, serial, rule, message, halted_tsz FROM "
                    "taler_ops.sync_halts WHERE cleared_tsz IS NULL ORDER BY halt_id")]
                part["cleared_halts"] = scalar(
                    conn, "SELECT count(*) FROM taler_ops.sync_halts WHERE cleared_tsz IS NOT NULL")
            part["available"] = True
    except DatabaseNotReady as exc:
        part["reason"] = str(exc)
    except psycopg.Error as exc:
        part["reason"] = f"sync state unreadable: {one_line(exc)}"
    return part

