"""The report's HTML: the page's numbers and charts (gateway.insights, gateway.charts) as one
self-contained file, charts as inline SVG rendered by vl-convert. Imported only when a report is
written: Altair takes most of a second to import, which every luigi command would pay.
"""

from __future__ import annotations

import html
import math
from datetime import date

import vl_convert

from gateway import charts

CHART_WIDTH = 640

STYLE = """
body { font: 15px/1.45 system-ui, sans-serif; color: #1b1f23; background: #fff; margin: 0; }
main { max-width: 720px; margin: 0 auto; padding: 1rem; }
section { border-top: 1px solid #dde1e6; padding: 0.5rem 0; }
.big { font-size: 1.4rem; font-weight: 600; }
.note { color: #5a6270; }
svg { max-width: 100%; height: auto; }
table { border-collapse: collapse; } td, th { padding: 0.2rem 0.6rem; text-align: right; }
"""


def kwh(value: float | None) -> str:
    return "–" if value is None else f"{value:.2f} kWh"


def yen(value: float | None) -> str:
    return "–" if value is None else f"¥{math.floor(value + 0.5):,}"  # as the page rounds


def svg(spec: dict) -> str:
    return vl_convert.vegalite_to_svg(spec)


def _document(title: str, build: str, body: str) -> str:
    return f"""<!doctype html>
<html lang="en"><head><meta charset="utf-8">
<meta name="built-from" content="{html.escape(build)}">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>{html.escape(title)}</title><style>{STYLE}</style></head>
<body><main><h1>{html.escape(title)}</h1>
{body}
</main></body></html>
"""


def _source_section(day: dict) -> str:
    source = html.escape(day["source"])
    parts = [f"<section><h2>{source}</h2>"]
    summary = day["day"]
    if summary is None:
        parts.append('<p class="note">No data for this day.</p></section>')
        return "".join(parts)
    usual = (
        f"Usual for this weekday: {kwh(summary['usual_kwh'])}, {yen(summary['usual_cost_yen'])}"
        if summary["usual_kwh"] is not None
        else "No earlier day of this weekday to compare with yet."
    )
    parts.append(
        f'<p><span class="big">{kwh(summary["energy_kwh"])}</span> '
        f'<span class="big">{yen(summary["cost_yen"])}</span><br>{usual}</p>'
    )
    if day["profile"]:
        parts.append(svg(charts.profile(day["profile"], CHART_WIDTH)))
    if day["days"]:
        parts.append(svg(charts.recent_days(day["days"], day["forecast"] or [], CHART_WIDTH)))
    if day["billing"]:
        b = day["billing"]
        parts.append(
            f"<p>Billing period {b['period_start']} to {b['period_end']}: so far "
            f"{yen(b['cost_so_far_yen'])} for {kwh(b['energy_kwh'])}, projected "
            f"{yen(b['projected_total_yen'])}.</p>"
        )
    if day["base_load"]:
        last = day["base_load"][-1]
        trend = last["base_load_trend_w_per_day"]
        trend_text = "not enough days for a trend" if trend is None else f"{trend:+.1f} W/day"
        parts.append(f"<p>Base load {last['base_load_w']:.0f} W, {trend_text}.</p>")
        parts.append(svg(charts.base_load(day["base_load"], CHART_WIDTH)))
    found = day["findings"] or []
    items = "".join(
        f"<li><strong>{html.escape(f['date_jst'])} ({html.escape(f['kind'])})</strong>: "
        f"{html.escape(f['reason'])}</li>"
        for f in found
    )
    parts.append(f"<h3>Findings</h3><ul>{items or '<li>Nothing unusual.</li>'}</ul></section>")
    return "".join(parts)


def daily(day: date, days: list[dict], build: str) -> str:
    body = "".join(_source_section(d) for d in days) or '<p class="note">No data yet.</p>'
    return _document(f"Home energy, {day.isoformat()}", build, body)


def period(day: dict, rows: list[dict], build: str) -> str:
    b = day["billing"]
    state = "open, projected" if b["is_open"] else "closed, billed"
    lines = "".join(
        f"<tr><td>{r['date_jst']}</td><td>{kwh(r['energy_kwh'])}</td><td>{yen(r['cost_yen'])}</td></tr>"
        for r in rows
    )
    body = (
        f"<p>{b['days_with_data']} of {b['days_in_period']} days with data ({state}).</p>"
        f'<p>So far <span class="big">{yen(b["cost_so_far_yen"])}</span> for '
        f'{kwh(b["energy_kwh"])}; projected <span class="big">{yen(b["projected_total_yen"])}'
        "</span></p>"
        + svg(charts.recent_days(rows, [], CHART_WIDTH))
        + f"<table><tr><th>day</th><th>energy</th><th>cost</th></tr>{lines}</table>"
    )
    title = f"{day['source']}: billing period {b['period_start']} to {b['period_end']}"
    return _document(title, build, body)
