"""Grafana provisioning: the dashboard names the contract's schema, and its InfluxQL gives the
right numbers when a real influxd runs it the way Grafana would ($timeFilter, $__interval)."""

from __future__ import annotations

import json
from collections import defaultdict
from datetime import UTC, date, datetime, timedelta
from itertools import pairwise
from zoneinfo import ZoneInfo

import pytest
import yaml
from conftest import REPO

from contracts.influx import InfluxSettings, make_client
from contracts.message import MEASUREMENT_FIELDS
from contracts.settings import Environment
from devstack.servers import InfluxServer

GRAFANA = REPO / "deploy" / "grafana"
DASHBOARD = GRAFANA / "dashboards" / "home-energy.json"
JST = ZoneInfo("Asia/Tokyo")
STEP = timedelta(minutes=30)
DAY1, DAY2 = date(2025, 12, 16), date(2025, 12, 17)


def dashboard() -> dict:
    return json.loads(DASHBOARD.read_text())


# The nightly batch's marts, written back (design.md section 9; tests/test_influx_writeback.py
# runs these panels on them).
MART_MEASUREMENTS = ("energy_daily", "energy_cost_daily", "energy_forecast")


def panel_query(title: str) -> str:
    """The panel's query of the readings (a panel may add one of the marts beside it)."""
    (panel,) = [p for p in dashboard()["panels"] if p["title"] == title]
    (target,) = [t for t in panel["targets"] if 'FROM "power"' in t["query"]]
    return target["query"]


def test_dashboard_queries_use_the_contract_measurement_and_fields() -> None:
    panels = dashboard()["panels"]
    titles = {p["title"] for p in panels}
    assert {"Power now", "Live power", "Energy today", "Peak today"} <= titles
    assert {"Daily energy, last 30 days", "Daily peak power, last 30 days"} <= titles
    for panel in panels:
        for target in panel["targets"]:
            query = target["query"]
            if any(f'FROM "{m}"' in query for m in MART_MEASUREMENTS):
                continue
            assert 'FROM "power"' in query, panel["title"]
            fields = {f for f in MEASUREMENT_FIELDS if f'"{f}"' in query}
            assert fields, f"{panel['title']}: no contract field in {query}"


def test_dashboard_uses_the_provisioned_datasource_and_local_days() -> None:
    datasources = yaml.safe_load((GRAFANA / "provisioning/datasources/influxdb.yaml").read_text())
    (source,) = datasources["datasources"]
    assert source["type"] == "influxdb" and source["url"] == "http://influxdb:8086"
    board = dashboard()
    assert board["timezone"] == "Asia/Tokyo"
    for panel in board["panels"]:
        assert panel["datasource"]["uid"] == source["uid"]
        for target in panel["targets"]:
            assert target["datasource"]["uid"] == source["uid"]
            if "time(1d)" in target["query"]:
                assert "tz('Asia/Tokyo')" in target["query"], panel["title"]


def test_dashboard_provider_reads_the_folder_compose_mounts() -> None:
    providers = yaml.safe_load((GRAFANA / "provisioning/dashboards/home-energy.yaml").read_text())
    compose = yaml.safe_load((REPO / "docker-compose.yml").read_text())
    mounts = dict(v.rsplit(":", 2)[:2] for v in compose["services"]["grafana"]["volumes"][:2])
    (provider,) = providers["providers"]
    assert mounts["./deploy/grafana/dashboards"] == provider["options"]["path"]


# --- The queries on a real influxd --------------------------------------------------------------


def readings(base_power: float) -> list[tuple[datetime, float, float]]:
    """(time, power, cumulative kWh) every 30 min over DAY1 and DAY2 (JST), with a meter reset
    (back to 0.0) at noon on DAY2."""
    start = datetime.combine(DAY1, datetime.min.time(), JST).astimezone(UTC)
    rows, kwh = [], 1000.0
    for i in range(96):
        ts = start + i * STEP
        kwh = 0.0 if ts.astimezone(JST) == datetime(2025, 12, 17, 12, tzinfo=JST) else kwh + 0.25
        rows.append((ts, base_power + (i % 48) * 10.0, kwh))
    return rows


SERIES = {"meter1": readings(200.0), "meter2": readings(500.0)}


def expected_daily_kwh(rows: list[tuple[datetime, float, float]], since: datetime) -> dict:
    """Sum of the increases between consecutive readings in range, on the later one's JST day."""
    in_range = [r for r in rows if r[0] >= since]
    totals: dict[date, float] = defaultdict(float)
    for (_, _, before), (ts, _, after) in pairwise(in_range):
        if after >= before:
            totals[ts.astimezone(JST).date()] += after - before
    return dict(totals)


@pytest.fixture
def filled_influx(influx: InfluxServer) -> InfluxServer:
    client = make_client(InfluxSettings.from_env(Environment()))
    points = [
        {
            "measurement": "power",
            "tags": {"source": source},
            "time": int(ts.timestamp() * 1000),
            "fields": {"instant_power_w": power, "energy_import_kwh": kwh},
        }
        for source, rows in SERIES.items()
        for ts, power, kwh in rows
    ]
    client.write_points(points, time_precision="ms")
    return influx


def run(
    query: str, start: datetime, end: datetime, interval: str = "30m"
) -> dict[str, list[tuple[datetime, float]]]:
    """The query as Grafana sends it, per source: {source: [(time, value), ...]}."""
    text = query.replace(
        "$timeFilter",
        f"time >= {int(start.timestamp() * 1000)}ms and time <= {int(end.timestamp() * 1000)}ms",
    ).replace("$__interval", interval)
    result = make_client(InfluxSettings.from_env(Environment())).query(text)
    series: dict[str, list[tuple[datetime, float]]] = {}
    # ResultSet.keys() gives (measurement, tags) per series; iterating it gives points instead.
    for _measurement, tags in result.keys():  # noqa: SIM118
        series[tags["source"]] = [
            (datetime.fromisoformat(p["time"]), next(v for k, v in p.items() if k != "time"))
            for p in result.get_points(tags=tags)
        ]
    return series


def day_range(day: date) -> tuple[datetime, datetime]:
    start = datetime.combine(day, datetime.min.time(), JST)
    return start, start + timedelta(days=1) - timedelta(milliseconds=1)


def test_energy_today_sums_increases_and_survives_a_meter_reset(
    filled_influx: InfluxServer,
) -> None:
    start, end = day_range(DAY2)
    result = run(panel_query("Energy today"), start, end)
    for source, rows in SERIES.items():
        (point,) = result[source]
        assert point[1] == pytest.approx(expected_daily_kwh(rows, start)[DAY2])
    # max - min would have counted the reset as ~1000 kWh.
    assert result["meter1"][0][1] < 24


def test_daily_energy_buckets_are_local_days(filled_influx: InfluxServer) -> None:
    start, _ = day_range(DAY1)
    _, end = day_range(DAY2)
    result = run(panel_query("Daily energy, last 30 days"), start, end)
    for source, rows in SERIES.items():
        expected = expected_daily_kwh(rows, start)
        assert result[source] == [
            (day_range(DAY1)[0], pytest.approx(expected[DAY1])),
            (day_range(DAY2)[0], pytest.approx(expected[DAY2])),
        ]


def test_peak_and_power_now(filled_influx: InfluxServer) -> None:
    start, end = day_range(DAY2)
    peaks = run(panel_query("Peak today"), start, end)
    latest = run(panel_query("Power now"), start, end)
    daily_peaks = run(panel_query("Daily peak power, last 30 days"), day_range(DAY1)[0], end)
    for source, rows in SERIES.items():
        day2 = [power for ts, power, _ in rows if ts.astimezone(JST).date() == DAY2]
        assert peaks[source][0][1] == max(day2)
        assert latest[source][0][1] == rows[-1][1]
        assert [value for _, value in daily_peaks[source]] == [max(day2), max(day2)]


def test_live_power_averages_per_interval(filled_influx: InfluxServer) -> None:
    start, end = day_range(DAY2)
    result = run(panel_query("Live power"), start, end, interval="1h")
    rows = [r for r in SERIES["meter1"] if r[0] >= start]
    # Two readings per hour: each bucket is their mean.
    assert [value for _, value in result["meter1"]] == [
        (a[1] + b[1]) / 2 for a, b in zip(rows[::2], rows[1::2], strict=True)
    ]
