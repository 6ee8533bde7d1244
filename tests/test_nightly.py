"""The nightly chain end to end on the real stages: readings in InfluxDB -> archive -> DuckDB ->
dbt (energy, costs, findings) -> ForecastDay -> ReportDay, InfluxDB write-back and Home
Assistant, all asked for by one NightlyDay; what the page and the report read is what the
stages wrote."""

from __future__ import annotations

import json
import urllib.parse
import urllib.request
from datetime import date, datetime, timedelta
from pathlib import Path
from zoneinfo import ZoneInfo

import duckdb
import pytest

from gateway import insights

TOKYO = ZoneInfo("Asia/Tokyo")
FIRST, LAST = date(2025, 11, 28), date(2025, 12, 16)  # 19 days: enough history to forecast


@pytest.fixture
def nightly(pipeline_env, tmp_path: Path):
    start = datetime.combine(FIRST, datetime.min.time(), TOKYO).astimezone(ZoneInfo("UTC"))
    count = ((LAST - FIRST).days + 1) * 48 + 1
    seeded = pipeline_env.cli(
        "-m", "pipeline.seed", "--start-utc", start.strftime("%Y-%m-%dT%H:%M:%SZ"),
        "--interval-minutes", "30", "--count", str(count), "--profile", "household",
    )  # fmt: skip
    assert seeded.returncode == 0, seeded.stderr
    pipeline_env.env.update(
        REPORTS_DIR=str(tmp_path / "reports"),
        # Days of 2025 are long past: forecast them anyway, on short windows (fast).
        FORECAST_RECENT_DAYS="10000",
        FORECAST_FIT_DAYS="14",
        FORECAST_BACKTEST_DAYS="3",
    )
    span = f"{FIRST}-{LAST + timedelta(days=1)}"
    built = pipeline_env.cli("DbtBuild", "--date", span, "--local-scheduler")
    assert built.returncode == 0, built.stderr[-3000:]
    run = pipeline_env.cli("NightlyDay", "--date", str(LAST), "--local-scheduler")
    assert run.returncode == 0, run.stderr[-3000:]
    return pipeline_env


def test_one_nightly_day_makes_every_output_from_the_real_marts(nightly, tmp_path) -> None:
    with duckdb.connect(str(nightly.duckdb), read_only=True) as con:
        page = insights.overview(con, "meter1", LAST)
        cost = con.execute(
            "select cost_yen from fct_daily_cost where source = 'meter1' and date_jst = ?", [LAST]
        ).fetchone()[0]
        forecasts = con.execute(
            "select granularity, count(*) from fct_energy_forecast "
            "where source = 'meter1' and made_for = ? group by 1 order by 1",
            [LAST],
        ).fetchall()
        chosen = con.execute(
            "select count(*) from forecast_accuracy where made_for = ? and chosen", [LAST]
        ).fetchone()[0]

    # The page's (and the report's) numbers come from the tables the stages built.
    assert page["missing_tables"] == []
    assert page["day"]["cost_yen"] == pytest.approx(cost)
    assert cost > 0
    assert forecasts == [("day", 7), ("half_hour", 48)]
    assert chosen == 4  # one chosen model, four metrics
    assert [row["made_for"] for row in page["forecast"]] == [str(LAST)] * 7  # JSON-ready rows
    assert page["billing"]["period_start"] <= str(LAST) < page["billing"]["period_end"]
    assert page["billing"]["projected_total_yen"] >= page["billing"]["cost_so_far_yen"] > 0
    assert page["base_load"]

    report = (tmp_path / "reports" / "daily" / f"{LAST}.html").read_text()
    assert "<svg" in report

    query = urllib.parse.urlencode(
        {
            "db": "home_energy",
            "q": "SELECT cost_yen FROM energy_cost_daily WHERE source = 'meter1'",
            "epoch": "ms",
        }
    )
    with urllib.request.urlopen(f"{nightly.influx.url}/query?{query}", timeout=10) as resp:
        series = json.load(resp)["results"][0]["series"][0]["values"]
    midnight = datetime.combine(LAST, datetime.min.time(), TOKYO).timestamp() * 1000
    assert dict(series)[midnight] == pytest.approx(cost)

    status = nightly.cli("-m", "pipeline", "status", "--days", "400").stdout
    line = next(line for line in status.splitlines() if line.startswith(str(LAST)))
    assert f"¥{cost:,.0f}" in line.split()

    rerun = nightly.cli("NightlyDay", "--date", str(LAST), "--local-scheduler")
    assert rerun.returncode == 0
    assert "ran successfully" not in rerun.stderr.split("Execution Summary", 1)[-1]
