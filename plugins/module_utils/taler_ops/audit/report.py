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
"""

import datetime
import html
import json
import os

import psycopg
from psycopg import sql

from . import report_spec as spec
from ..db import connect, describe
from ..errors import DatabaseNotReady, TalerOpsError, UsageError

FRAC_BASE = 100_000_000
FOREVER_US = 2 ** 63 - 1
REPORT_FORMAT = 1
DEFAULT_MAX_ROWS = 5000
_CROCKFORD = "0123456789ABCDEFGHJKMNPQRSTVWXYZ"


# -- formatting ------------------------------------------------------------------------
def amount(units_, currency=None):
    """Exact Taler amount string of an int of 1e-8 units (None stays None)."""
    if units_ is None:
        return None
    units_ = int(units_)
    sign = "-" if units_ < 0 else ""
    val, frac = divmod(abs(units_), FRAC_BASE)
    text = f"{sign}{val}"
    if frac:
        text += "." + f"{frac:08d}".rstrip("0")
    return f"{currency}:{text}" if currency else text


def parse_amount(text):
    """Inverse of :func:`amount` (units); for tests and --since."""
    if text is None:
        return None
    text = text.split(":", 1)[-1]
    sign = -1 if text.startswith("-") else 1
    text = text.lstrip("-")
    val, _, frac = text.partition(".")
    return sign * (int(val) * FRAC_BASE + int((frac + "0" * 8)[:8] or 0))


def crockford(data):
    """Taler's (GNUnet's) Crockford base32 of bytes, as Taler shows keys."""
    if data is None:
        return None
    bits = int.from_bytes(bytes(data), "big") if data else 0
    nbits = len(data) * 8
    pad = (5 - nbits % 5) % 5
    bits <<= pad
    n = (nbits + pad) // 5
    return "".join(_CROCKFORD[(bits >> (5 * (n - 1 - i))) & 31] for i in range(n))


def time_us(value):
    if value is None:
        return None
    value = int(value)
    if value >= FOREVER_US:
        return "never"
    try:
        return (datetime.datetime.fromtimestamp(value / 1e6, datetime.timezone.utc)
                .strftime("%Y-%m-%d %H:%M:%SZ"))
    except (OverflowError, OSError, ValueError):
        return str(value)


def tstamp(value):
    if value is None:
        return None
    return value.astimezone(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M:%SZ")


def _cell(kind, value, currency):
    if value is None:
        return None
    if kind == "amount":
        return amount(value, currency)
    if kind == "key":
        return crockford(value)
    if kind == "time":
        return time_us(value)
    if kind == "bool":
        return "yes" if value else "no"
    if kind == "int":
        return int(value)
    return str(value)


def _col_sql(col):
    ident = sql.Identifier(col.name)
    if col.kind == "amount":
        return sql.SQL("CASE WHEN {c} IS NULL THEN NULL ELSE ({c}).val::numeric * 100000000 "
                       "+ ({c}).frac END").format(c=ident)
    return ident


def _one_line(exc):
    return " ".join(str(exc).split())


# -- reading ---------------------------------------------------------------------------
def _columns(conn):
    """{table: set(columns)} of schema auditor."""
    out = {}
    for table, column in conn.execute(
            "SELECT table_name, column_name FROM information_schema.columns "
            "WHERE table_schema = 'auditor'").fetchall():
        out.setdefault(table, set()).add(column)
    return out


def _section(conn, sec, have, currency, since_mark, max_rows):
    part = {"table": sec.table, "title": sec.title, "helper": sec.helper, "what": sec.what,
            "columns": [{"name": c.name, "kind": c.kind, "label": c.label} for c in sec.columns]}
    cols = have.get(sec.table)
    needed = {"row_id", "suppressed"} | {c.name for c in sec.columns}
    if cols is None:
        part["unavailable"] = f"table auditor.{sec.table} does not exist"
    elif needed - cols:
        part["unavailable"] = (f"auditor.{sec.table} is not Taler's shape (no column "
                               f"{', '.join(sorted(needed - cols))})")
    if "unavailable" in part:
        part.update(open=0, suppressed=0, rows=[], suppressed_rows=[], measures=[],
                    truncated=False, max_row_id=None)
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
    agg = conn.execute(sql.SQL("SELECT {} FROM {}").format(
        sql.SQL(", ").join(aggregates), table)).fetchone()
    part["open"], part["suppressed"], part["max_row_id"] = agg[0], agg[1], agg[2]
    part["measures"] = [{"name": m.name, "label": m.label, "category": m.category,
                         "amount": amount(agg[3 + i], currency)}
                        for i, m in enumerate(sec.measures)]
    select = sql.SQL("SELECT row_id, {} FROM {} WHERE {} AND suppressed = {} "
                     "ORDER BY row_id LIMIT {}")
    names = sql.SQL(", ").join(_col_sql(c) for c in sec.columns)
    for key, flag in (("rows", False), ("suppressed_rows", True)):
        part[key] = []
        for row in conn.execute(select.format(names, table, scope, sql.Literal(flag),
                                              sql.Literal(max_rows))).fetchall():
            entry = {"row_id": row[0]}
            for col, value in zip(sec.columns, row[1:]):
                entry[col.name] = _cell(col.kind, value, currency)
            part[key].append(entry)
    part["truncated"] = (len(part["rows"]) < part["open"]
                         or len(part["suppressed_rows"]) < part["suppressed"])
    return part


def _sum(conn, have, table, exprs):
    if table not in have:
        return None
    return conn.execute(sql.SQL("SELECT count(*), {} FROM {}").format(
        sql.SQL(", ").join(sql.SQL("coalesce(sum({}), 0)").format(sql.SQL(e)) for e in exprs),
        sql.Identifier("auditor", table))).fetchone()


def _last_audit(conn):
    """Commit time of the last write to auditor_progress, when the server records it.

    Taler's auditor schema holds no timestamp of a run; PostgreSQL has one with
    track_commit_timestamp = on (whoever wrote the progress points: any helper)."""
    if conn.execute("SELECT current_setting('track_commit_timestamp')").fetchone()[0] != "on":
        return {"time": None, "source": "not recorded: Taler's auditor schema keeps no time of "
                "a run; set track_commit_timestamp = on on the auditor database's server"}
    ts = conn.execute("SELECT max(pg_xact_commit_timestamp(xmin)) "
                      "FROM auditor.auditor_progress").fetchone()[0]
    if ts is None:
        return {"time": None, "source": "not recorded: no progress point was written since "
                "track_commit_timestamp was turned on"}
    return {"time": tstamp(ts), "source": "commit time of the last progress update"}


def _auditor_part(conn, currency, since, max_rows):
    if not conn.execute("SELECT to_regnamespace('auditor') IS NOT NULL").fetchone()[0]:
        raise DatabaseNotReady("the auditor database has no schema auditor (run "
                               "taler-auditor-dbinit / taler-ops auditor-dbinit)")
    have = _columns(conn)
    out = {}
    patches = []
    if conn.execute("SELECT to_regclass('_v.patches') IS NOT NULL").fetchone()[0]:
        patches = [{"name": n, "applied": tstamp(t), "by": b} for n, t, b in conn.execute(
            "SELECT patch_name, applied_tsz, applied_by FROM _v.patches ORDER BY patch_name")]
    out["patches"] = patches
    out["patch_level"] = max((p["name"] for p in patches if p["name"].startswith("auditor-")),
                             default=None)
    missing = [t for t in ("auditor_progress", "auditor_balances") if t not in have]
    if missing:
        raise DatabaseNotReady(f"the auditor database is not Taler's auditor schema: no "
                               f"{', '.join('auditor.' + t for t in missing)}")
    out["progress"] = conn.execute("SELECT progress_key, progress_offset FROM "
                                   "auditor.auditor_progress ORDER BY progress_key").fetchall()
    bal_value = "balance_value" if "balance_value" in have["auditor_balances"] else None
    if bal_value is None:
        raise DatabaseNotReady("the auditor database is not Taler's auditor schema: "
                               "auditor.auditor_balances has no balance_value")
    out["balances"] = conn.execute(
        "SELECT balance_key, CASE WHEN balance_value IS NULL THEN NULL ELSE "
        "(balance_value).val::numeric * 100000000 + (balance_value).frac END "
        "FROM auditor.auditor_balances ORDER BY balance_key").fetchall()
    out["last_audit"] = _last_audit(conn)
    out["sections"] = [_section(conn, sec, have, currency,
                                (since or {}).get(sec.table) if since else None, max_rows)
                       for sec in spec.SECTIONS]
    u = spec.units
    out["pending"] = []
    if {"denom_pub_hash", "denom_balance", "denom_loss", "num_issued", "denom_risk",
            "recoup_loss"} <= have.get("auditor_denomination_pending", set()):
        out["pending"] = conn.execute(
            f"SELECT denom_pub_hash, {u('denom_balance')}, {u('denom_loss')}, num_issued, "
            f"{u('denom_risk')}, {u('recoup_loss')} FROM auditor.auditor_denomination_pending "
            "ORDER BY denom_pub_hash").fetchall()
    out["historic"] = []
    if {"denom_pub_hash", "revenue_timestamp", "revenue_balance", "loss_balance"} <= \
            have.get("auditor_historic_denomination_revenue", set()):
        out["historic"] = conn.execute(
            f"SELECT denom_pub_hash, revenue_timestamp, {u('revenue_balance')}, "
            f"{u('loss_balance')} FROM auditor.auditor_historic_denomination_revenue "
            "ORDER BY revenue_timestamp, denom_pub_hash").fetchall()
    out["reserve_summary"] = []
    if {"start_date", "end_date", "reserve_profits"} <= \
            have.get("auditor_historic_reserve_summary", set()):
        out["reserve_summary"] = conn.execute(
            f"SELECT start_date, end_date, {u('reserve_profits')} FROM "
            "auditor.auditor_historic_reserve_summary ORDER BY start_date").fetchall()
    out["reserves"] = None
    if {"reserve_balance", "reserve_loss", "withdraw_fee_balance", "close_fee_balance",
            "purse_fee_balance", "open_fee_balance", "history_fee_balance"} <= \
            have.get("auditor_reserves", set()):
        out["reserves"] = _sum(conn, have, "auditor_reserves", [
            u("reserve_balance"), u("reserve_loss"), u("withdraw_fee_balance"),
            u("close_fee_balance"), u("purse_fee_balance"), u("open_fee_balance"),
            u("history_fee_balance")])
    out["purses"] = None
    if {"balance", "target"} <= have.get("auditor_purses", set()):
        out["purses"] = _sum(conn, have, "auditor_purses", [u("balance"), u("target")])
    out["signkeys"] = (conn.execute("SELECT count(*) FROM auditor.auditor_exchange_signkeys")
                       .fetchone()[0] if "auditor_exchange_signkeys" in have else None)
    out["history"] = _history(conn)
    return out


HISTORY_POINTS = 400     # most points a time chart draws (and the JSON carries)


def _history(conn):
    """The audit's run history (taler_ops.audit_runs), thinned to HISTORY_POINTS rows.

    Only taler-ops' audit writes it; Taler's own helpers leave no trace of when
    they ran, so without it the report says so instead of drawing."""
    if not conn.execute("SELECT to_regclass('taler_ops.audit_runs') IS NOT NULL AND "
                        "has_table_privilege('taler_ops.audit_runs', 'SELECT')").fetchone()[0]:
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


def _sync_part(exchange_uri):
    """Watermarks, open holes and halts of the sync on the safe copy, if readable."""
    part = {"available": False, "database": describe(exchange_uri)}
    try:
        with connect(exchange_uri, "safe copy") as conn:
            conn.read_only = True
            have = dict(conn.execute(
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
                part["cleared_halts"] = conn.execute(
                    "SELECT count(*) FROM taler_ops.sync_halts WHERE cleared_tsz IS NOT NULL"
                ).fetchone()[0]
            part["available"] = True
    except DatabaseNotReady as exc:
        part["reason"] = str(exc)
    except psycopg.Error as exc:
        part["reason"] = f"sync state unreadable: {_one_line(exc)}"
    return part


def load_since(path):
    """Per-table row_id marks from an earlier JSON report (``--since``)."""
    try:
        with open(path, encoding="utf-8") as fh:
            earlier = json.load(fh)
        marks = {s["table"]: s["max_row_id"] or 0 for s in earlier["sections"]}
        return {"report": path, "generated": earlier["generated"], "marks": marks}
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise UsageError(f"--since {path}: not a taler-ops report in JSON: {exc}") from None


# -- the model -------------------------------------------------------------------------
def collect(auditor_uri, exchange_uri=None, currency=None, exchange_url=None,
            since=None, max_rows=DEFAULT_MAX_ROWS, now=None):
    """The report's data model (a JSON-able dict)."""
    now = now or datetime.datetime.now(datetime.timezone.utc)
    try:
        with connect(auditor_uri, "auditor database") as conn:
            conn.isolation_level = psycopg.IsolationLevel.REPEATABLE_READ
            conn.read_only = True
            raw = _auditor_part(conn, currency, since["marks"] if since else None, max_rows)
            conn.rollback()
    except psycopg.Error as exc:
        raise TalerOpsError(f"cannot read the auditor database ({describe(auditor_uri)}): "
                            f"{_one_line(exc)}") from None
    sync = _sync_part(exchange_uri) if exchange_uri else \
        {"available": False, "reason": "no [exchangedb-postgres] CONFIG in the configuration"}
    return build_model(raw, sync, currency=currency, exchange_url=exchange_url,
                       auditor_db=describe(auditor_uri), since=since, now=now)


def _progress(rows, sync):
    marks = {t["table"]: t for t in sync.get("tables", [])} if sync.get("available") else {}
    out = []
    for key, offset in rows:
        helper = spec.helper_of(key)
        table = spec.progress_table(key)
        entry = {"key": key, "helper": helper, "table": table, "next": offset}
        if key in spec.COUNTERS:
            entry["covered"] = f"counter {offset}"
        else:
            entry["covered"] = f"1 … {offset - 1}" if offset > 1 else "none yet"
        mark = marks.get(table)
        if mark is not None:
            entry["synced"] = mark["last_serial"]
            entry["behind"] = max(0, mark["last_serial"] - max(offset - 1, 0))
        out.append(entry)
    return out


def build_model(raw, sync, currency, exchange_url, auditor_db, since, now):
    cur = currency
    sections = raw["sections"]
    totals = {spec.LOSS: 0, spec.RISK: 0, spec.ISSUE: 0}
    losses, risks, issues = [], [], []
    for sec in sections:
        for m in sec["measures"]:
            units_ = parse_amount(m["amount"])
            totals[m["category"]] += units_
            if units_:
                {spec.LOSS: losses, spec.RISK: risks, spec.ISSUE: issues}[m["category"]].append(
                    {"label": m["label"], "table": sec["table"], "amount": m["amount"]})
    balances = []
    by_cat = {}
    for key, value in raw["balances"]:
        cat = spec.balance_category(key)
        balances.append({"key": key, "helper": spec.helper_of(key), "category": cat,
                         "value": amount(value, cur)})
        if value is not None:
            by_cat[cat] = by_cat.get(cat, 0) + int(value)
    pending_risk = sum(int(p[4]) for p in raw["pending"])
    denominations = {}
    for h, ts, rev, loss in raw["historic"]:
        denominations[bytes(h)] = {"denomination": crockford(h), "expired": time_us(ts),
                                   "revenue": amount(rev, cur), "loss": amount(loss, cur),
                                   "_rev": int(rev)}
    pending = []
    for h, bal, loss, issued, risk, recoup in raw["pending"]:
        pending.append({"denomination": crockford(h), "balance": amount(bal, cur),
                        "loss": amount(loss, cur), "issued": issued, "risk": amount(risk, cur),
                        "recoup_loss": amount(recoup, cur)})
    historic = sorted(denominations.values(), key=lambda d: (-d["_rev"], d["denomination"]))
    for d in historic:
        del d["_rev"]
    res = raw["reserves"]
    purses = raw["purses"]
    open_findings = sum(s["open"] for s in sections)
    suppressed = sum(s["suppressed"] for s in sections)
    model = {
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
        "history": _history_model(raw.get("history"), cur),
    }
    return model


def _history_model(hist, cur):
    if hist is None:
        return {"available": False, "reason": "not read", "recorded": 0, "points": []}
    points = []
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


# -- renderings ------------------------------------------------------------------------
def render_json(model):
    return json.dumps(model, indent=2, sort_keys=True, ensure_ascii=False) + "\n"


def _fmt(value):
    return "-" if value is None else str(value)


def _table_lines(headers, rows, indent="  "):
    cells = [[_fmt(c) for c in row] for row in rows]
    widths = [max([len(h)] + [len(r[i]) for r in cells]) for i, h in enumerate(headers)]
    line = lambda r: indent + "  ".join(c.ljust(w) for c, w in zip(r, widths)).rstrip()
    return [line(headers)] + [line(r) for r in cells]


def summary_figures(model):
    """(label, value) of the summary, in the order all three forms show them."""
    s = model["summary"]
    return [("open findings", s["findings_open"]),
            ("suppressed findings", s["findings_suppressed"]),
            ("report tables with open findings", s["tables_with_findings"]),
            ("losses found", s["loss_total"]),
            ("at risk", s["risk_total"]),
            ("amounts at issue", s["at_issue_total"]),
            ("losses in the auditor's balances", s["balance_losses"]),
            ("risk in the auditor's balances", s["balance_risk"]),
            ("fee revenue", s["fee_revenue"])]


TEXT_HISTORY_ROWS = 12


def history_lines(model):
    """A short table of the history: evenly spaced points, always the newest."""
    h = model["history"]
    if not h["available"]:
        return [f"  no history: {h['reason']}"]
    points = h["points"]
    if len(points) > TEXT_HISTORY_ROWS:
        step = (len(points) - 1) / (TEXT_HISTORY_ROWS - 1)
        points = [points[round(i * step)] for i in range(TEXT_HISTORY_ROWS)]
    lines = [f"  {h['recorded']} row(s) recorded, {len(h['points'])} charted, "
             f"{len(points)} shown"]
    return lines + _table_lines(
        ["run ended", "runs", "open", "suppressed", "losses", "at risk", "at issue",
         "sync age s"],
        [[p["ended"], p["runs"], p["findings_open"], p["findings_suppressed"], p["loss_total"],
          p["risk_total"], p["at_issue_total"], p["sync_age_seconds"]] for p in points])


def render_text(model):
    a, s = model["audited"], model["summary"]
    out = [f"Taler auditor report — generated {model['generated']}", ""]
    out.append("What was audited")
    for label, value in (("exchange", a["exchange_url"]), ("currency", a["currency"]),
                         ("auditor database", a["auditor_database"]),
                         ("safe copy", a["safe_copy"]), ("patch level", a["patch_level"]),
                         ("last sync", a["last_sync"]), ("last audit", a["last_audit"])):
        out.append(f"  {label:<18} {_fmt(value)}")
    if model["since"]:
        since = model["since"]
        out.append(f"  {'new since':<18} {since['generated']} ({since['report']})")
    if a["progress"]:
        out.append("")
        out += _table_lines(["progress point", "helper", "exchange table", "serials covered",
                             "next", "synced", "behind"],
                            [[p["key"], p["helper"], p["table"], p["covered"], p["next"],
                              p.get("synced"), p.get("behind")] for p in a["progress"]])
    out += ["", "Summary"]
    for label, value in summary_figures(model):
        out.append(f"  {label:<34} {_fmt(value)}")
    for title, key in (("Losses", "losses"), ("Risk", "risks"), ("At issue", "at_issue")):
        if s[key]:
            out.append(f"  {title}:")
            out += [f"    {e['label']:<50} {e['amount']}  ({e['table']})" for e in s[key]]
    if s["unreadable_tables"]:
        out.append("  unreadable: " + ", ".join(s["unreadable_tables"]))
    for sec in model["sections"]:
        out += ["", f"{sec['title']} (auditor.{sec['table']}): {sec['open']} open, "
                    f"{sec['suppressed']} suppressed"]
        if sec.get("unavailable"):
            out.append(f"  unavailable: {sec['unavailable']}")
            continue
        for m in sec["measures"]:
            out.append(f"  total {m['label']} [{m['category']}]: {m['amount']}")
        headers = ["row_id"] + [c["label"] for c in sec["columns"]]
        names = [c["name"] for c in sec["columns"]]
        if sec["rows"]:
            out += _table_lines(headers, [[r["row_id"]] + [r[n] for n in names]
                                          for r in sec["rows"]])
        if sec["suppressed_rows"]:
            out.append("  suppressed:")
            out += _table_lines(headers, [[r["row_id"]] + [r[n] for n in names]
                                          for r in sec["suppressed_rows"]], indent="    ")
        if sec["truncated"]:
            out.append("  (list truncated; the counts and totals cover every row)")
    out += ["", "Balances"]
    out += _table_lines(["key", "helper", "category", "value"],
                        [[b["key"], b["helper"], b["category"], b["value"]]
                         for b in model["balances"]]) if model["balances"] else ["  none"]
    r = model["revenue"]
    out += ["", "Revenue per denomination (expired, realised)"]
    out += _table_lines(["denomination", "expired", "revenue", "loss"],
                        [[d["denomination"], d["expired"], d["revenue"], d["loss"]]
                         for d in r["historic_denominations"]]) \
        if r["historic_denominations"] else ["  none"]
    out += ["", "Denominations outstanding"]
    out += _table_lines(["denomination", "balance", "issued", "risk", "loss", "recoup loss"],
                        [[d["denomination"], d["balance"], d["issued"], d["risk"], d["loss"],
                          d["recoup_loss"]] for d in r["pending_denominations"]]) \
        if r["pending_denominations"] else ["  none"]
    if r["reserves"]:
        out.append(f"  reserves: {r['reserves']['count']}, balance {r['reserves']['balance']}, "
                   f"loss {r['reserves']['loss']}, fee balance {r['reserves']['fee_balance']}")
    if r["purses"]:
        out.append(f"  purses: {r['purses']['count']}, balance {r['purses']['balance']}, "
                   f"target {r['purses']['target']}")
    out += ["", "Over time (audit runs)"] + history_lines(model)
    sync = model["sync"]
    out += ["", "Sync"]
    if not sync["available"]:
        out.append(f"  not available: {sync['reason']}")
    else:
        out.append(f"  last sync {_fmt(sync['last_sync'])}; {len(sync['holes'])} open hole(s), "
                   f"{len(sync['halts'])} open halt(s), {sync['cleared_halts']} cleared")
        if sync["holes"]:
            out += _table_lines(["table", "from", "to", "seen"],
                                [[h["table"], h["from"], h["to"], h["seen"]]
                                 for h in sync["holes"]])
        if sync["halts"]:
            out += _table_lines(["table", "serial", "rule", "halted", "message"],
                                [[h["table"], h["serial"], h["rule"], h["halted"], h["message"]]
                                 for h in sync["halts"]])
    return "\n".join(out) + "\n"


# -- charts (inline SVG, generated here: no script, no network) ------------------------
def hbar_chart(title, labels, series, value_fmt=str, width=640):
    """Horizontal bars: one group per label, one bar per series (name, values, css class)."""
    n = len(labels)
    if not n:
        return ""
    bar, gap = 12, 10
    group = bar * len(series) + gap
    left, right, top = 230, 110, 26
    height = top + n * group + 24
    plot = width - left - right
    peak = max([v for _, values, _ in series for v in values if v is not None] + [1])
    esc = html.escape
    parts = [f'<svg class="chart" xmlns="http://www.w3.org/2000/svg" role="img" '
             f'viewBox="0 0 {width} {height}" width="{width}" height="{height}">',
             f'<title>{esc(title)}</title>',
             f'<text x="0" y="16" class="chart-title">{esc(title)}</text>']
    for i, label in enumerate(labels):
        y0 = top + i * group
        short = label if len(label) <= 34 else label[:33] + "…"
        parts.append(f'<text x="{left - 6}" y="{y0 + bar * len(series) / 2 + 4:.1f}" '
                     f'text-anchor="end" class="chart-label"><title>{esc(label)}</title>'
                     f'{esc(short)}</text>')
        for j, (name, values, css) in enumerate(series):
            v = values[i]
            if v is None:           # no bar of this series in this group
                continue
            w = 0 if v <= 0 else max(1.0, plot * v / peak)
            y = y0 + j * bar
            parts.append(f'<rect x="{left}" y="{y}" width="{w:.1f}" height="{bar - 2}" '
                         f'class="{css}"><title>{esc(name)}: {esc(value_fmt(v))}</title></rect>')
            parts.append(f'<text x="{left + w + 4:.1f}" y="{y + bar - 3}" class="chart-value">'
                         f'{esc(value_fmt(v))}</text>')
    _legend(parts, series, left, height)
    parts.append("</svg>")
    return "".join(parts)


def _legend(parts, series, left, height, css_prefix=""):
    """One coloured square and name per series, along the chart's bottom edge."""
    ly, x = height - 8, left
    for name, _, css in series:
        parts.append(f'<rect x="{x}" y="{ly - 9}" width="10" height="10" '
                     f'class="{css_prefix}{css}"/>')
        parts.append(f'<text x="{x + 14}" y="{ly}" class="chart-legend">{html.escape(name)}</text>')
        x += 14 + 7 * len(name) + 16


def _epoch(text):
    return datetime.datetime.strptime(text, "%Y-%m-%d %H:%M:%SZ").replace(
        tzinfo=datetime.timezone.utc).timestamp()


def step_chart(title, times, series, value_fmt=str, width=640):
    """Values over time as steps (a value holds until the next run): ``times`` are
    'YYYY-MM-DD HH:MM:SSZ' strings, series (name, values, css suffix); None is a gap."""
    if not times:
        return ""
    left, right, top, plot_h = 92, 16, 30, 150
    height = top + plot_h + 48
    plot_w = width - left - right
    xs = [_epoch(t) for t in times]
    x0, x1 = xs[0], xs[-1]
    xpos = ((lambda x: left + plot_w * (x - x0) / (x1 - x0)) if x1 > x0
            else (lambda x: left + plot_w / 2))
    peak = max([v for _, values, _ in series for v in values if v is not None] + [0]) or 1
    ypos = lambda v: top + plot_h * (1 - v / peak)
    esc = html.escape
    parts = [f'<svg class="chart timechart" xmlns="http://www.w3.org/2000/svg" role="img" '
             f'viewBox="0 0 {width} {height}" width="{width}" height="{height}">',
             f'<title>{esc(title)}</title>',
             f'<text x="0" y="16" class="chart-title">{esc(title)}</text>']
    for v in (0, peak / 2, peak):
        y = ypos(v)
        parts.append(f'<line x1="{left}" x2="{left + plot_w}" y1="{y:.1f}" y2="{y:.1f}" '
                     f'class="grid"/>')
        label = value_fmt(int(v) if v == int(v) else v)
        parts.append(f'<text x="{left - 6}" y="{y + 4:.1f}" text-anchor="end" '
                     f'class="chart-value">{esc(str(label))}</text>')
    axis_y = top + plot_h + 16
    parts.append(f'<text x="{left}" y="{axis_y}" class="chart-label">{esc(times[0])}</text>')
    if len(times) > 1:
        parts.append(f'<text x="{left + plot_w}" y="{axis_y}" text-anchor="end" '
                     f'class="chart-label">{esc(times[-1])}</text>')
    dots = len(times) <= 60
    for name, values, css in series:
        path, pen = [], False
        for i, (x, v) in enumerate(zip(xs, values)):
            if v is None:
                pen = False
                continue
            px, py = xpos(x), ypos(v)
            path.append(f"{'H' if pen else 'M'}{px:.1f}" + (f"V{py:.1f}" if pen else f" {py:.1f}"))
            pen = True
            if dots or i == len(xs) - 1:
                parts.append(f'<circle cx="{px:.1f}" cy="{py:.1f}" r="2.5" class="dot-{css}">'
                             f'<title>{esc(times[i])} {esc(name)}: {esc(str(value_fmt(v)))}'
                             f'</title></circle>')
        if path:
            parts.append(f'<path d="{"".join(path)}" class="line line-{css}"/>')
    _legend(parts, series, left, height, css_prefix="dot-")
    parts.append("</svg>")
    return "".join(parts)


def history_charts(model):
    """Findings, losses and the sync's staleness over the recorded audit runs."""
    h = model.get("history") or {}
    out = {"findings_time": "", "losses_time": "", "sync_time": ""}
    points = h.get("points") or []
    if not points:
        return out
    cur = model["audited"]["currency"]
    times = [p["ended"] for p in points]
    out["findings_time"] = step_chart(
        "Findings over time (at the end of each audit run)", times,
        [("open", [p["findings_open"] for p in points], "open"),
         ("suppressed", [p["findings_suppressed"] for p in points], "suppressed")])
    out["losses_time"] = step_chart(
        "Losses and risk over time", times,
        [("losses found", [parse_amount(p["loss_total"]) for p in points], "loss"),
         ("at risk", [parse_amount(p["risk_total"]) for p in points], "risk"),
         ("at issue", [parse_amount(p["at_issue_total"]) for p in points], "issue")],
        value_fmt=lambda v: amount(round(v), cur))
    if any(p["sync_age_seconds"] is not None for p in points):
        out["sync_time"] = step_chart(
            "Sync staleness seen by each audit run (seconds since it last copied a row)", times,
            [("seconds", [p["sync_age_seconds"] for p in points], "lag")])
    return out


def charts(model):
    cur = model["audited"]["currency"]
    fmt_amount = lambda v: amount(v, cur)
    out = {"findings": "", "losses": "", "revenue": ""}
    out.update(history_charts(model))
    kinds = [s for s in model["sections"] if s["open"] or s["suppressed"]]
    if kinds:
        out["findings"] = hbar_chart(
            "Findings per kind", [s["title"] for s in kinds],
            [("open", [s["open"] for s in kinds], "bar-open"),
             ("suppressed", [s["suppressed"] for s in kinds], "bar-suppressed")])
    s = model["summary"]
    money = [(e["label"], parse_amount(e["amount"]), "bar-loss") for e in s["losses"]] + \
            [(e["label"], parse_amount(e["amount"]), "bar-risk") for e in s["risks"]]
    if money:
        out["losses"] = hbar_chart(
            "Losses and risk", [m[0] for m in money],
            [("loss", [m[1] if m[2] == "bar-loss" else None for m in money], "bar-loss"),
             ("risk", [m[1] if m[2] == "bar-risk" else None for m in money], "bar-risk")],
            value_fmt=fmt_amount)
    r = model["revenue"]
    denoms = {}
    for d in r["historic_denominations"]:
        denoms.setdefault(d["denomination"], [None, None])[0] = parse_amount(d["revenue"])
    for d in r["pending_denominations"]:
        denoms.setdefault(d["denomination"], [None, None])[1] = parse_amount(d["balance"])
    if denoms:
        names = sorted(denoms, key=lambda k: (-(denoms[k][0] or 0), -(denoms[k][1] or 0), k))[:40]
        title = "Revenue per denomination" + (f" (top {len(names)} of {len(denoms)})"
                                              if len(denoms) > len(names) else "")
        out["revenue"] = hbar_chart(
            title, [n[:12] + "…" for n in names],
            [("realised revenue (expired)", [denoms[n][0] for n in names], "bar-revenue"),
             ("outstanding (not expired)", [denoms[n][1] for n in names], "bar-outstanding")],
            value_fmt=fmt_amount)
    return out


def _environment():
    try:
        import jinja2
    except ImportError:
        raise TalerOpsError("the HTML report needs Jinja2, which is not installed in this "
                            "Python (--format json or text work without it)") from None
    here = os.path.join(os.path.dirname(os.path.abspath(__file__)), "templates")
    env = jinja2.Environment(loader=jinja2.FileSystemLoader(here),
                             autoescape=jinja2.select_autoescape(["html", "j2"]),
                             undefined=jinja2.StrictUndefined, trim_blocks=True,
                             lstrip_blocks=True)
    env.filters["dash"] = _fmt
    env.filters["units"] = lambda v: "" if v is None else parse_amount(v)
    env.filters["shortkey"] = lambda v: "-" if v is None else (
        v if len(v) <= 16 else v[:13] + "…")
    return env


def render_html(model):
    env = _environment()
    from markupsafe import Markup
    svg = {k: Markup(v) for k, v in charts(model).items()}
    return env.get_template("report.html.j2").render(
        m=model, figures=summary_figures(model), charts=svg)


RENDERERS = {"html": render_html, "json": render_json, "text": render_text}
