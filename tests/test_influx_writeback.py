"""InfluxWriteBackDay: the marts in InfluxDB for Grafana, rewritten idempotently, on a real
influxd from a warehouse the real pipeline built (conftest.py `marts`)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from datetime import UTC, datetime, timedelta
from pathlib import Path
from zoneinfo import ZoneInfo

import duckdb
import pytest
from conftest import REPO, fetch

from contracts.influx import InfluxSettings, make_client
from contracts.settings import Environment
from pipeline.days import DaySet
from pipeline.outputs import InfluxWriteBackDay
from pipeline.tasks import DbtBuild

JST = ZoneInfo("Asia/Tokyo")
MEASUREMENTS = ("energy_daily", "energy_cost_daily", "energy_forecast")
DASHBOARD = REPO / "deploy" / "grafana" / "dashboards" / "home-energy.json"


def influx_points() -> dict[str, list[dict]]:
    """Every point of the three measurements, with its tags, in a stable order."""
    client = make_client(InfluxSettings.from_env(Environment()))
    points = {}
    for name in MEASUREMENTS:
        result = client.query(f'SELECT * FROM "{name}"', epoch="ms")
        points[name] = sorted(
            result.get_points(), key=lambda p: (p["source"], p.get("granularity") or "", p["time"])
        )
    return points


def midnight_ms(day) -> int:
    return int(datetime.combine(day, datetime.min.time(), JST).timestamp() * 1000)


def test_the_marts_arrive_as_their_own_measurements(marts) -> None:
    assert marts.build(InfluxWriteBackDay(date=DaySet(marts.days)))
    points = influx_points()

    daily = fetch(
        marts.duckdb,
        "select source, date_jst, daily_energy_kwh, peak_w from fct_daily_energy order by all",
    )
    assert {
        (p["source"], p["time"], p["daily_energy_kwh"], p["peak_w"]) for p in points["energy_daily"]
    } == {(s, midnight_ms(d), kwh, peak) for s, d, kwh, peak in daily}
    assert {p["source"] for p in points["energy_daily"]} == set(marts.sources)
    # Floats always: InfluxDB would refuse a later float where it first saw an integer.
    assert all(isinstance(p["reading_count"], float) for p in points["energy_daily"])

    cost = fetch(marts.duckdb, "select source, date_jst, cost_yen from fct_daily_cost order by all")
    assert [(p["source"], p["time"], p["cost_yen"]) for p in points["energy_cost_daily"]] == [
        (s, midnight_ms(d), yen) for s, d, yen in cost
    ]

    # Each target keeps its latest forecast: made for the day before it when there is one.
    latest = fetch(
        marts.duckdb,
        """
        select source, granularity, epoch_ms(target_start_utc), value_kwh, horizon
        from fct_energy_forecast
        qualify made_for = max(made_for) over (partition by source, granularity, target_start_utc)
        order by all
        """,
    )
    assert sorted(
        (p["source"], p["granularity"], p["time"], p["value_kwh"], p["horizon"])
        for p in points["energy_forecast"]
    ) == [(s, g, t, v, float(h)) for s, g, t, v, h in latest]
    # So a day that has been forecast the day before shows that day-ahead forecast.
    past_days = [
        p
        for p in points["energy_forecast"]
        if p["granularity"] == "day" and p["time"] <= midnight_ms(marts.days[-1])
    ]
    assert len(past_days) == 2 * len(marts.sources)
    assert all(p["horizon"] == 1.0 for p in past_days)


def test_a_rerun_leaves_exactly_the_same_points(marts) -> None:
    days = DaySet(marts.days)
    assert marts.build(InfluxWriteBackDay(date=days))
    before = influx_points()
    assert InfluxWriteBackDay.bulk_complete(iter(marts.days)) == marts.days
    assert InfluxWriteBackDay(date=days).complete()

    # Written again in any order (the oldest day last, as a backfill might), from scratch.
    for marker in InfluxWriteBackDay(date=days).output():
        marker.path.unlink()
    assert not InfluxWriteBackDay(date=days).complete()
    for day in reversed(marts.days):
        assert marts.build(InfluxWriteBackDay(date=day))
    assert influx_points() == before
    series = (
        make_client(InfluxSettings.from_env(Environment()))
        .query("SHOW SERIES")
        .raw["series"][0]["values"]
    )
    assert len([s for (s,) in series if s.startswith(MEASUREMENTS)]) == len(marts.sources) * 4


def test_a_rebuilt_day_is_written_again(marts) -> None:
    day = marts.days[1]
    assert marts.build(InfluxWriteBackDay(date=day))
    assert InfluxWriteBackDay(date=day).complete()
    # DbtBuild marks a day anew when it rebuilds it (late data, a neighbour's load).
    with duckdb.connect(str(marts.duckdb)) as con:
        con.execute(
            "update table_updates set fingerprint = 'rebuilt' where update_id = ?",
            [f"{DbtBuild.get_task_family()}(date={day})"],
        )
    assert not InfluxWriteBackDay(date=day).complete()
    assert InfluxWriteBackDay.bulk_complete(iter([day])) == []


def test_killed_before_its_marker_it_writes_the_same_points_again(marts) -> None:
    day = marts.days[0]
    command = ("InfluxWriteBackDay", "--date", str(day))
    killed = luigi_cli(*command, extra_env={"PIPELINE_FAILPOINT": "outputs.written"})
    assert killed.returncode == -9
    written = influx_points()
    assert written["energy_daily"] and not InfluxWriteBackDay(date=day).complete()

    rerun = luigi_cli(*command)
    assert rerun.returncode == 0, rerun.stderr
    assert influx_points() == written
    assert InfluxWriteBackDay(date=day).complete()


def test_influxdb_away_fails_in_one_line_and_marks_nothing(marts, monkeypatch) -> None:
    monkeypatch.setenv("INFLUX_URL", "http://127.0.0.1:9")  # nothing listens on discard
    day = marts.days[0]
    assert not marts.build(InfluxWriteBackDay(date=day))
    assert not InfluxWriteBackDay(date=day).complete()


# --- The provisioned dashboard's panels on the written-back marts ------------------------------


def mart_targets() -> list[tuple[str, dict]]:
    board = json.loads(DASHBOARD.read_text())
    return [
        (panel["title"], target)
        for panel in board["panels"]
        for target in panel["targets"]
        if any(f'FROM "{m}"' in target["query"] for m in MEASUREMENTS)
    ]


def grafana_query(query: str, start: datetime, end: datetime, now: datetime) -> dict:
    """The query as Grafana sends it ($timeFilter, $__interval), with InfluxDB's now() pinned
    to the test's `now`; {(source, column): [(time_ms, value), ...]}."""
    start_ms, end_ms, now_ms = (int(t.timestamp() * 1000) for t in (start, end, now))
    text = (
        query.replace("$timeFilter", f"time >= {start_ms}ms and time <= {end_ms}ms")
        .replace("$__interval", "1h")
        .replace("now()", f"{now_ms}ms")
    )
    result = make_client(InfluxSettings.from_env(Environment())).query(text, epoch="ms")
    series: dict = {}
    for _measurement, tags in result.keys():  # noqa: SIM118
        for point in result.get_points(tags=tags):
            for column, value in point.items():
                if column != "time":
                    series.setdefault((tags["source"], column), []).append((point["time"], value))
    return series


def test_dashboard_panels_show_the_written_back_marts(marts) -> None:
    assert marts.build(InfluxWriteBackDay(date=DaySet(marts.days)))
    targets = dict((t["query"], title) for title, t in mart_targets())
    measured = {m for m in MEASUREMENTS if any(f'FROM "{m}"' in q for q in targets)}
    assert measured == set(MEASUREMENTS), "a written-back measurement has no panel"

    first, last = marts.days[0], marts.days[-1]
    start = datetime.combine(first, datetime.min.time(), JST)
    end = datetime.combine(last + timedelta(days=8), datetime.min.time(), JST)
    now = datetime.combine(last + timedelta(days=1), datetime.min.time(), JST) + timedelta(hours=9)
    expected = expected_series(marts.duckdb, now)
    for title, target in mart_targets():
        got = grafana_query(target["query"], start, end, now)
        kind = query_kind(target["query"])
        assert got, f"{title}: no rows"
        assert {source for source, _ in got} == set(marts.sources), title
        for key, points in got.items():
            times, values = zip(*expected[kind][key], strict=True)
            assert [t for t, _ in points] == list(times), (title, key)
            # InfluxDB computes the half hour's mean power itself (value_kwh * 2000).
            assert [v for _, v in points] == pytest.approx(values, rel=1e-12), (title, key)


def query_kind(query: str) -> str:
    if "'half_hour'" in query:
        return "half_hour_w"
    if "now()" in query:
        return "coming_days"
    return next(m for m in MEASUREMENTS if f'FROM "{m}"' in query)


def expected_series(live: Path, now: datetime) -> dict[str, dict]:
    """What each panel kind should show, straight from DuckDB."""
    energy = fetch(live, "select source, date_jst, daily_energy_kwh from fct_daily_energy")
    cost = fetch(live, "select source, date_jst, cost_yen from fct_daily_cost")
    forecast = fetch(
        live,
        """
        select source, granularity, epoch_ms(target_start_utc), value_kwh, lower_kwh, upper_kwh
        from fct_energy_forecast
        qualify made_for = max(made_for) over (partition by source, granularity, target_start_utc)
        order by all
        """,
    )
    now_ms = int(now.astimezone(UTC).timestamp() * 1000)
    result: dict[str, dict] = {"half_hour_w": {}, "coming_days": {}, "energy_forecast": {}}
    # Panel 9's second query reads the actual daily energy beside the forecast, as "actual".
    result["energy_daily"] = by_source(energy, "daily_energy_kwh") | by_source(energy, "actual")
    result["energy_cost_daily"] = by_source(cost, "cost_yen")
    for source, granularity, t, value, lower, upper in forecast:
        if granularity == "half_hour":
            result["half_hour_w"].setdefault((source, "forecast_w"), []).append((t, value * 2000))
            continue
        for name, v in (("forecast", value), ("lower", lower), ("upper", upper)):
            result["energy_forecast"].setdefault((source, name), []).append((t, v))
            if t > now_ms - 86_400_000:
                result["coming_days"].setdefault((source, name), []).append((t, v))
    return result


def by_source(rows: list[tuple], column: str) -> dict:
    series: dict = {}
    for source, day, value in sorted(rows):
        series.setdefault((source, column), []).append((midnight_ms(day), value))
    return series


def test_days_older_than_influxdbs_retention_are_skipped_with_a_warning(
    marts, influx, caplog: pytest.LogCaptureFixture
) -> None:
    # December 2025 is far older than a week: InfluxDB drops every point and says so.
    influx.query(
        'CREATE RETENTION POLICY "week" ON "home_energy" DURATION 7d REPLICATION 1 DEFAULT'
    )
    days = DaySet(marts.days)
    assert marts.build(InfluxWriteBackDay(date=days))
    assert influx_points() == {name: [] for name in MEASUREMENTS}
    assert "older than its retention policy" in caplog.text
    assert InfluxWriteBackDay(date=days).complete()  # not retried every night


def luigi_cli(*args: str, extra_env: dict[str, str] | None = None) -> subprocess.CompletedProcess:
    command = [str(Path(sys.executable).with_name("luigi")), "--module", "pipeline", *args]
    return subprocess.run(
        [*command, "--local-scheduler"],
        env={**os.environ, **(extra_env or {})},
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=180,
    )


def test_range_daily_writes_a_range_in_one_batch_then_finds_it_complete(marts) -> None:
    span = ("--start", str(marts.days[0]), "--stop", str(marts.days[-1] + timedelta(days=1)))
    first = luigi_cli("RangeDaily", "--of", "InfluxWriteBackDay", *span, "--days-back", "1000")
    assert first.returncode == 0, first.stderr
    assert "InfluxWriteBackDay(date=2025-12-15-2025-12-18)" in first.stderr  # one batch
    written = influx_points()
    assert len(written["energy_daily"]) == len(marts.days) * len(marts.sources)
    again = luigi_cli("RangeDaily", "--of", "InfluxWriteBackDay", *span, "--days-back", "1000")
    assert again.returncode == 0, again.stderr
    assert "ran successfully" not in again.stderr
    assert influx_points() == written
