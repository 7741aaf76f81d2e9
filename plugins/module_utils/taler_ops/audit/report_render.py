"""The report's three forms: JSON, plain text and HTML (a Jinja template with the charts).

Each renders the model of report.collect and nothing else, so the three agree;
the HTML template lives in templates/ beside this module (package data).
"""

import json
import os
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING

from .report_charts import charts
from .report_model import Model
from .report_values import parse_amount
from ..errors import TalerOpsError

if TYPE_CHECKING:
    # Imported when the HTML form is rendered: JSON and text work without Jinja2.
    import jinja2


def render_json(model: Model) -> str:
    return json.dumps(model, indent=2, sort_keys=True, ensure_ascii=False) + "\n"


def _fmt(value: object) -> str:
    return "-" if value is None else str(value)


def _table_lines(headers: list[str], rows: Sequence[Sequence[object]],
                 indent: str = "  ") -> list[str]:
    cells = [[_fmt(c) for c in row] for row in rows]
    widths = [max([len(h)] + [len(r[i]) for r in cells]) for i, h in enumerate(headers)]
    line: Callable[[list[str]], str] = lambda r: indent + "  ".join(c.ljust(w) for c, w in zip(r, widths)).rstrip()
    return [line(headers)] + [line(r) for r in cells]


def summary_figures(model: Model) -> list[tuple[str, str | int]]:
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


def history_lines(model: Model) -> list[str]:
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


def render_text(model: Model) -> str:
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
    for label, figure in summary_figures(model):
        out.append(f"  {label:<34} {_fmt(figure)}")
    for title, entries in (("Losses", s["losses"]), ("Risk", s["risks"]),
                           ("At issue", s["at_issue"])):
        if entries:
            out.append(f"  {title}:")
            out += [f"    {e['label']:<50} {e['amount']}  ({e['table']})" for e in entries]
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


def _environment() -> "jinja2.Environment":
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
    units: Callable[[str | None], int | str] = lambda v: "" if v is None else parse_amount(v)
    shortkey: Callable[[str | None], str] = lambda v: "-" if v is None else (
        v if len(v) <= 16 else v[:13] + "…")
    env.filters["units"] = units
    env.filters["shortkey"] = shortkey
    return env


def render_html(model: Model) -> str:
    env = _environment()
    from markupsafe import Markup
    svg = {k: Markup(v) for k, v in charts(model).items()}
    return env.get_template("report.html.j2").render(
        m=model, figures=summary_figures(model), charts=svg)
