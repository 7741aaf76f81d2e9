"""The auditor's report: one data model read from Taler's auditor database, three renderings.

:func:`collect` reads the auditor database (schema ``auditor`` as Taler's
auditor-0001/0002 build it, whoever filled it: taler-ops' audit or Taler's own
helpers) and, when reachable, the sync state of the safe copy (schema
``taler_ops``).  It returns a plain dict of strings, ints, lists and dicts — the
model — that :func:`render_json`, :func:`render_text` and :func:`render_html` turn
into the three forms; every number in them comes from the model, so they agree.

Amounts are Taler amount strings (``KUDOS:1.5``; without a configured currency just
``1.5``); sums are exact (integers of 1e-8 units).  Times are UTC ISO strings.
Everything is read in one REPEATABLE READ READ ONLY transaction per database.

The parts: report_read (reading both databases), report_values (how amounts, keys
and times are written), report_charts (the SVG charts), report_render (the three
forms); report_spec says what is read from which of Taler's tables.  This module
builds the model and is what callers use: the names below that come from the
parts are re-exported for them.
"""

import datetime
import json
from collections.abc import Callable

import psycopg

from . import report_spec as spec
from .report_charts import charts
from .report_model import (AuditorRaw, Balance, HistoricDenomination, History, HistoryPoint,
                           HistoryRows, Model, MoneyEntry, PendingDenomination, ProgressEntry,
                           Since, SyncState)
from .report_read import auditor_part, one_line, sync_part
from .report_render import render_html, render_json, render_text
from .report_values import amount, crockford, parse_amount, time_us, tstamp
from ..db import connect, describe
from ..errors import TalerOpsError, UsageError

# What callers use; charts and parse_amount live in the parts.
__all__ = ["DEFAULT_MAX_ROWS", "RENDERERS", "REPORT_FORMAT", "amount", "build_model", "charts",
           "collect", "load_since", "parse_amount", "render_html", "render_json", "render_text"]

REPORT_FORMAT = 1
DEFAULT_MAX_ROWS = 5000


def load_since(path: str) -> Since:
    """Per-table row_id marks from an earlier JSON report (``--since``)."""
    try:
        with open(path, encoding="utf-8") as fh:
            earlier = json.load(fh)
        marks = {s["table"]: s["max_row_id"] or 0 for s in earlier["sections"]}
        return {"report": path, "generated": earlier["generated"], "marks": marks}
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise UsageError(f"--since {path}: not a taler-ops report in JSON: {exc}") from None


def collect(auditor_uri: str, exchange_uri: str | None = None, currency: str | None = None,
            exchange_url: str | None = None, since: Since | None = None,
            max_rows: int = DEFAULT_MAX_ROWS, now: datetime.datetime | None = None) -> Model:
    """The report's data model (a JSON-able dict)."""
    now = now or datetime.datetime.now(datetime.timezone.utc)
    try:
        with connect(auditor_uri, "auditor database") as conn:
            conn.isolation_level = psycopg.IsolationLevel.REPEATABLE_READ
            conn.read_only = True
            raw = auditor_part(conn, currency, since["marks"] if since else None, max_rows)
            conn.rollback()
    except psycopg.Error as exc:
        raise TalerOpsError(f"cannot read the auditor database ({describe(auditor_uri)}): "
                            f"{one_line(exc)}") from None
    sync: SyncState = sync_part(exchange_uri) if exchange_uri else \
        {"available": False, "reason": "no [exchangedb-postgres] CONFIG in the configuration"}
    return build_model(raw, sync, currency=currency, exchange_url=exchange_url,
                       auditor_db=describe(auditor_uri), since=since, now=now)


def _progress(rows: list[tuple[str, int]], sync: SyncState) -> list[ProgressEntry]:
    marks = {t["table"]: t for t in sync.get("tables", [])} if sync.get("available") else {}
    out = []
    for key, offset in rows:
        table = spec.progress_table(key)
        if key in spec.COUNTERS:
            covered = f"counter {offset}"
        else:
            covered = f"1 … {offset - 1}" if offset > 1 else "none yet"
        entry: ProgressEntry = {"key": key, "helper": spec.helper_of(key), "table": table,
                                "next": offset, "covered": covered}
        mark = marks.get(table) if table is not None else None
        if mark is not None:
            entry["synced"] = mark["last_serial"]
            entry["behind"] = max(0, mark["last_serial"] - max(offset - 1, 0))
        out.append(entry)
    return out


def build_model(raw: AuditorRaw, sync: SyncState, currency: str | None,
                exchange_url: str | None, auditor_db: str, since: Since | None,
                now: datetime.datetime) -> Model:
    cur = currency
    sections = raw["sections"]
    totals = {spec.LOSS: 0, spec.RISK: 0, spec.ISSUE: 0}
    losses: list[MoneyEntry] = []
    risks: list[MoneyEntry] = []
    issues: list[MoneyEntry] = []
    for sec in sections:
        for m in sec["measures"]:
            units_ = parse_amount(m["amount"])
            totals[m["category"]] += units_
            if units_:
                {spec.LOSS: losses, spec.RISK: risks, spec.ISSUE: issues}[m["category"]].append(
                    {"label": m["label"], "table": sec["table"], "amount": m["amount"]})
    balances: list[Balance] = []
    by_cat: dict[str, int] = {}
    for key, value in raw["balances"]:
        cat = spec.balance_category(key)
        balances.append({"key": key, "helper": spec.helper_of(key), "category": cat,
                         "value": amount(value, cur)})
        if value is not None:
            by_cat[cat] = by_cat.get(cat, 0) + int(value)
    pending_risk = sum(int(p[4]) for p in raw["pending"])
    # by hash: (revenue in units, to sort by, and the entry)
    denominations: dict[bytes, tuple[int, HistoricDenomination]] = {}
    for h, ts, rev, loss in raw["historic"]:
        denominations[bytes(h)] = (int(rev), {
            "denomination": crockford(h), "expired": time_us(ts), "revenue": amount(rev, cur),
            "loss": amount(loss, cur)})
    pending: list[PendingDenomination] = []
    for h, bal, loss, issued, risk, recoup in raw["pending"]:
        pending.append({"denomination": crockford(h), "balance": amount(bal, cur),
                        "loss": amount(loss, cur), "issued": issued, "risk": amount(risk, cur),
                        "recoup_loss": amount(recoup, cur)})
    historic = [d for _, d in sorted(denominations.values(),
                                     key=lambda e: (-e[0], e[1]["denomination"]))]
    res = raw["reserves"]
    purses = raw["purses"]
    open_findings = sum(s["open"] for s in sections)
    suppressed = sum(s["suppressed"] for s in sections)
    model: Model = {
        "format": REPORT_FORMAT,
        "generated": now.astimezone(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M:%SZ"),
        "audited": {
            "exchange_url": exchange_url, "currency": currency, "auditor_database": auditor_db,
            "safe_copy": sync.get("database"), "patch_level": raw["patch_level"],
            "patches": raw["patches"], "last_audit": raw["last_audit"]["time"],
            "last_audit_source": raw["last_audit"]["source"],
            "last_sync": sync.get("last_sync") if sync.get("available") else None,
            "progress": _progress(raw["progress"], sync),
            "exchange_signkeys": raw["signkeys"],
        },
        "since": ({"report": since["report"], "generated": since["generated"]}
                  if since else None),
        "summary": {
            "findings_open": open_findings, "findings_suppressed": suppressed,
            "tables_with_findings": sum(1 for s in sections if s["open"]),
            "loss_total": amount(totals[spec.LOSS], cur),
            "risk_total": amount(totals[spec.RISK] + pending_risk, cur),
            "at_issue_total": amount(totals[spec.ISSUE], cur),
            "losses": losses, "risks": risks
            + ([{"label": "outstanding coins of current denominations (recoup risk)",
                 "table": "auditor_denomination_pending", "amount": amount(pending_risk, cur)}]
               if pending_risk else []),
            "at_issue": issues,
            "balance_losses": amount(by_cat.get(spec.LOSS, 0), cur),
            "balance_risk": amount(by_cat.get(spec.RISK, 0), cur),
            "fee_revenue": amount(by_cat.get("revenue", 0), cur),
            "unreadable_tables": [s["table"] for s in sections if s.get("unavailable")],
        },
        "sections": sections,
        "balances": balances,
        "revenue": {
            "fee_revenue": [b for b in balances if b["category"] == "revenue"],
            "historic_denominations": historic,
            "pending_denominations": pending,
            "reserve_summary": [{"from": time_us(a), "until": time_us(b),
                                 "profits": amount(p, cur)} for a, b, p in raw["reserve_summary"]],
            "reserves": None if res is None else {
                "count": res[0], "balance": amount(res[1], cur), "loss": amount(res[2], cur),
                "fee_balance": amount(sum(int(x) for x in res[3:8]), cur)},
            "purses": None if purses is None else {
                "count": purses[0], "balance": amount(purses[1], cur),
                "target": amount(purses[2], cur)},
        },
        "sync": sync,
        "history": _history_model(raw["history"], cur),
    }
    return model


def _history_model(hist: HistoryRows, cur: str | None) -> History:
    points: list[HistoryPoint] = []
    for (run_id, started, ended, runs, examined, n_open, n_supp, by_table, loss, risk, issue,
         revenue, sync_copy, sync_beyond) in hist["rows"]:
        points.append({
            "run_id": run_id, "started": tstamp(started), "ended": tstamp(ended), "runs": runs,
            "rows_examined": examined, "findings_open": n_open,
            "findings_suppressed": n_supp, "open_by_table": dict(by_table),
            "loss_total": amount(loss, cur), "risk_total": amount(risk, cur),
            "at_issue_total": amount(issue, cur), "fee_revenue": amount(revenue, cur),
            "sync_last_copy": tstamp(sync_copy),
            # how long the sync had not copied a row when the run ended
            "sync_age_seconds": None if sync_copy is None else
            max(0, round((ended - sync_copy).total_seconds())),
            "sync_rows_beyond_cut": sync_beyond})
    return {"available": bool(points), "reason": hist["reason"], "recorded": hist["recorded"],
            "points": points}


RENDERERS: dict[str, Callable[[Model], str]] = {"html": render_html, "json": render_json, "text": render_text}
