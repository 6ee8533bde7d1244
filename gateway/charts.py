"""The page's and the reports' charts as Vega-Lite specs, built with Altair from insights rows.

One spec serves both: the page hands it to vega-embed in the browser (vendored under
gateway/static/vendor), the reports render it to inline SVG with vl-convert. Days and half hours
are labels (strings), not times, so the browser's time zone cannot shift a bar to another day.

Altair builds each chart once per width, over named datasets; a request only fills in the
rows (`datasets`), because building a chart with Altair costs tens of milliseconds.
"""

from __future__ import annotations

import copy
from functools import cache
from typing import Any

import altair as alt

Spec = dict[str, Any]
Width = int | str  # pixels, or "container" to fill the page's column
HEIGHT = 180


def profile(rows: list[dict], width: Width) -> Spec:
    """Half-hourly kWh of one day, coloured by the time-of-use band of each half hour."""
    values = [
        {
            "time": r["bucket_start_jst"][11:16],
            "kWh": r["energy_kwh"],
            "yen": r["cost_yen"],
            "band": r["rate_kind"],
        }
        for r in rows
    ]
    return _filled(_profile_chart(width), profile=values)


def recent_days(days: list[dict], forecast: list[dict], width: Width) -> Spec:
    """Daily kWh as bars, then the forecast's days as points with their interval."""
    measured = [
        {"day": d["date_jst"][5:], "kWh": d["energy_kwh"], "what": "measured"} for d in days
    ]
    predicted = [
        {
            "day": f["target_date_jst"][5:],
            "kWh": f["value_kwh"],
            "low": f["lower_kwh"],
            "high": f["upper_kwh"],
            "what": f"forecast ({f['level']}% interval)",
        }
        for f in forecast
    ]
    return _filled(_recent_days_chart(width), measured=measured, predicted=predicted)


def base_load(rows: list[dict], width: Width) -> Spec:
    values = [{"day": r["date_jst"][5:], "W": r["base_load_w"]} for r in rows]
    return _filled(_base_load_chart(width), base_load=values)


def power_today(points: list[dict], width: Width) -> Spec:
    """Today's power from InfluxDB (times are instants: shown in the viewer's time zone)."""
    values = [
        {"time": p["time"], "W": p["instant_power_w"]}
        for p in points
        if p.get("instant_power_w") is not None
    ]
    return _filled(_power_chart(width), power=values)


@cache
def _profile_chart(width: Width) -> Spec:
    chart = (
        alt.Chart(alt.NamedData("profile"), title="Half-hourly use and time-of-use bands")
        .mark_bar()
        .encode(
            x=alt.X("time:O", title=None, axis=alt.Axis(labelOverlap="greedy", labelAngle=0)),
            y=alt.Y("kWh:Q", title="kWh"),
            color=alt.Color("band:N", title="band", legend=alt.Legend(orient="top")),
            tooltip=["time:O", _number("kWh", ".3f"), _number("yen", ".1f"), "band:N"],
        )
    )
    return _finish(chart, width)


@cache
def _recent_days_chart(width: Width) -> Spec:
    # sort=None: days in the order of the rows, measured first, then the forecast's.
    x = alt.X("day:O", title=None, sort=None, axis=alt.Axis(labelOverlap="greedy", labelAngle=-45))
    color = alt.Color("what:N", title=None, legend=alt.Legend(orient="top"))
    bars = (
        alt.Chart(alt.NamedData("measured"))
        .mark_bar()
        .encode(
            x=x,
            y=alt.Y("kWh:Q", title="kWh per day"),
            color=color,
            tooltip=["day:O", _number("kWh", ".2f")],
        )
    )
    forecast = alt.Chart(alt.NamedData("predicted"))
    interval = forecast.mark_rule(strokeWidth=2).encode(x=x, y="low:Q", y2="high:Q", color=color)
    points = forecast.mark_point(filled=True, size=50).encode(
        x=x,
        y="kWh:Q",
        color=color,
        tooltip=["day:O", *(_number(f, ".2f") for f in ("kWh", "low", "high"))],
    )
    return _finish(alt.layer(bars, interval, points, title="Last 30 days and the next 7"), width)


@cache
def _base_load_chart(width: Width) -> Spec:
    chart = (
        alt.Chart(alt.NamedData("base_load"), title="Base load (always-on power)")
        .mark_line(point=True)
        .encode(
            x=alt.X("day:O", title=None, axis=alt.Axis(labelOverlap="greedy", labelAngle=-45)),
            y=alt.Y("W:Q", title="W", scale=alt.Scale(zero=False)),
            tooltip=["day:O", _number("W", ".0f")],
        )
    )
    return _finish(chart, width)


@cache
def _power_chart(width: Width) -> Spec:
    chart = (
        alt.Chart(alt.NamedData("power"), title="Power today")
        .mark_line(point=alt.OverlayMarkDef(size=12))
        .encode(
            x=alt.X("time:T", title=None, axis=alt.Axis(format="%H:%M")),
            y=alt.Y("W:Q", title="W"),
            tooltip=[alt.Tooltip("time:T", format="%H:%M"), _number("W", ".0f")],
        )
    )
    return _finish(chart, width)


def _number(name: str, number_format: str) -> alt.Tooltip:
    return alt.Tooltip(f"{name}:Q", format=number_format)


def _finish(chart: alt.TopLevelMixin, width: Width) -> Spec:
    chart = chart.properties(width=width, height=HEIGHT).configure(
        background="transparent", autosize=alt.AutoSizeParams(type="fit", contains="padding")
    )
    # Validation against the schema costs more than the rest of a request: the specs are ours.
    return chart.to_dict(validate=False)


def _filled(template: Spec, **datasets: list[dict]) -> Spec:
    spec = copy.deepcopy(template)  # the cached template is shared between requests
    spec["datasets"] = datasets
    return spec
