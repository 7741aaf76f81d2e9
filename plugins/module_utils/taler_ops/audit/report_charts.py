"""The report's charts: inline SVG generated here (no script, no network).

Bars per kind of finding, per loss and risk, per denomination, and step charts
of the audit's run history; every number comes from the report's model.
"""

import datetime
import html
from collections.abc import Callable, Sequence

from .report_model import Model
from .report_values import amount, parse_amount

# (name, one value per label or time (None: no bar, a gap), css class or suffix)
Series = tuple[str, Sequence[int | None], str]


def hbar_chart(title: str, labels: list[str], series: list[Series],
               value_fmt: Callable[[int], str] = str, width: int = 640) -> str:
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


def _legend(parts: list[str], series: list[Series], left: int, height: int,
            css_prefix: str = "") -> None:
    """One coloured square and name per series, along the chart's bottom edge."""
    ly, x = height - 8, left
    for name, _, css in series:
        parts.append(f'<rect x="{x}" y="{ly - 9}" width="10" height="10" '
                     f'class="{css_prefix}{css}"/>')
        parts.append(f'<text x="{x + 14}" y="{ly}" class="chart-legend">{html.escape(name)}</text>')
        x += 14 + 7 * len(name) + 16


def _epoch(text: str) -> float:
    return datetime.datetime.strptime(text, "%Y-%m-%d %H:%M:%SZ").replace(
        tzinfo=datetime.timezone.utc).timestamp()


def step_chart(title: str, times: list[str], series: list[Series],
               value_fmt: Callable[[float], str] = str, width: int = 640) -> str:
    """Values over time as steps (a value holds until the next run): ``times`` are
    'YYYY-MM-DD HH:MM:SSZ' strings, series (name, values, css suffix); None is a gap."""
    if not times:
        return ""
    left, right, top, plot_h = 92, 16, 30, 150
    height = top + plot_h + 48
    plot_w = width - left - right
    xs = [_epoch(t) for t in times]
    x0, x1 = xs[0], xs[-1]
    xpos: Callable[[float], float] = (
        (lambda x: left + plot_w * (x - x0) / (x1 - x0)) if x1 > x0
        else (lambda x: left + plot_w / 2))
    peak = max([v for _, values, _ in series for v in values if v is not None] + [0]) or 1
    ypos: Callable[[float], float] = lambda v: top + plot_h * (1 - v / peak)
    esc = html.escape
    parts = [f'<svg class="chart timechart" xmlns="http://www.w3.org/2000/svg" role="img" '
             f'viewBox="0 0 {width} {height}" width="{width}" height="{height}">',
             f'<title>{esc(title)}</title>',
             f'<text x="0" y="16" class="chart-title">{esc(title)}</text>']
    for level in (0, peak / 2, peak):
        y = ypos(level)
        parts.append(f'<line x1="{left}" x2="{left + plot_w}" y1="{y:.1f}" y2="{y:.1f}" '
                     f'class="grid"/>')
        label = value_fmt(int(level) if level == int(level) else level)
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


def history_charts(model: Model) -> dict[str, str]:
    """Findings, losses and the sync's staleness over the recorded audit runs."""
    out = {"findings_time": "", "losses_time": "", "sync_time": ""}
    points = model["history"]["points"]
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


def charts(model: Model) -> dict[str, str]:
    """Every chart of the HTML form, by name (empty: nothing to draw)."""
    cur = model["audited"]["currency"]
    fmt_amount: Callable[[int], str] = lambda v: amount(v, cur)
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
    denoms: dict[str, list[int | None]] = {}
    for d in r["historic_denominations"]:
        denoms.setdefault(d["denomination"], [None, None])[0] = parse_amount(d["revenue"])
    for p in r["pending_denominations"]:
        denoms.setdefault(p["denomination"], [None, None])[1] = parse_amount(p["balance"])
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
