"""ForecastDay on a real pipeline: influxd -> Parquet -> DuckDB -> dbt -> forecasts."""

from __future__ import annotations

import json
import signal
import urllib.parse
import urllib.request
from datetime import date, datetime, timedelta
from zoneinfo import ZoneInfo

import duckdb
import pandas as pd
import pytest
from conftest import HOUR, power_lines, recent_days
from luigi.task_register import Register

from pipeline.config import forecast
from pipeline.days import day_window_utc, local_today
from pipeline.errors import PipelineError
from pipeline.forecast_models import forecast_sources
from pipeline.forecast_task import (
    ACCURACY_TABLE,
    FORECAST_TABLE,
    ForecastDay,
    checked_settings,
    forecast_states,
    read_history,
)
from pipeline.seed import household_lines

TOKYO = ZoneInfo("Asia/Tokyo")
SOURCES = ["meter1", "meter2"]
FORECAST_COLUMNS = [
    ("source", "VARCHAR"),
    ("made_for", "DATE"),
    ("made_at", "TIMESTAMP WITH TIME ZONE"),
    ("granularity", "VARCHAR"),
    ("target_start_utc", "TIMESTAMP WITH TIME ZONE"),
    ("target_date_jst", "DATE"),
    ("horizon", "INTEGER"),
    ("model", "VARCHAR"),
    ("value_kwh", "DOUBLE"),
    ("lower_kwh", "DOUBLE"),
    ("upper_kwh", "DOUBLE"),
    ("level", "INTEGER"),
]
ACCURACY_COLUMNS = [
    ("source", "VARCHAR"),
    ("made_for", "DATE"),
    ("model", "VARCHAR"),
    ("metric", "VARCHAR"),
    ("value", "DOUBLE"),
    ("window_days", "INTEGER"),
    ("chosen", "BOOLEAN"),
]


def household(first: date, days: int, sources: list[str] = SOURCES) -> list[str]:
    """Half-hourly readings of realistic curves from `first` to the midnight after the last day."""
    start = day_window_utc(first, TOKYO)[0]
    batches = household_lines(
        start=start,
        interval=timedelta(minutes=30),
        count=48 * days + 1,
        sources=sources,
        measurement="power",
        tz="Asia/Tokyo",
    )
    return [line for batch in batches for line in batch]


def backfill(env, days: int):
    return env.cli(
        "RangeDaily", "--of", "ForecastDay", "--days-back", str(days), "--local-scheduler"
    )


def tables(env) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Both tables without made_at (the only column a remake may change), in key order."""
    with duckdb.connect(str(env.duckdb), read_only=True) as con:
        made = con.execute(
            f"select * exclude (made_at) from {FORECAST_TABLE} "
            "order by source, made_for, granularity, target_start_utc"
        ).df()
        scored = con.execute(
            f"select * from {ACCURACY_TABLE} order by source, made_for, model, metric"
        ).df()
    return made, scored


def made_at(env) -> dict[date, datetime]:
    with duckdb.connect(str(env.duckdb), read_only=True) as con:
        return dict(
            con.execute(
                f"select made_for, max(made_at) from {FORECAST_TABLE} group by 1"
            ).fetchall()
        )


def columns(con, table: str) -> list[tuple[str, str]]:
    return con.execute(
        "select column_name, data_type from information_schema.columns "
        "where table_name = ? order by ordinal_position",
        [table],
    ).fetchall()


def test_backfill_forecasts_recent_days_by_the_contract(pipeline_env) -> None:
    days = recent_days(17)
    pipeline_env.write(household(days[0], len(days)))
    result = backfill(pipeline_env, len(days))
    assert result.returncode == 0, result.stderr

    recent = [d for d in days if d >= local_today(TOKYO) - timedelta(days=forecast().recent_days)]
    forecast_for = days[13:]  # 14 days of history and more
    assert set(forecast_for) <= set(recent)
    with duckdb.connect(str(pipeline_env.duckdb), read_only=True) as con:
        assert columns(con, FORECAST_TABLE) == FORECAST_COLUMNS
        assert columns(con, ACCURACY_TABLE) == ACCURACY_COLUMNS
        made = con.execute(f"select * from {FORECAST_TABLE}").df()
        scored = con.execute(f"select * from {ACCURACY_TABLE}").df()
    made["made_for"] = pd.to_datetime(made["made_for"]).dt.date
    scored["made_for"] = pd.to_datetime(scored["made_for"]).dt.date

    # Keys: one row per (source, made_for, granularity, target) and (source, made_for, model,
    # metric); 48 half hours and 7 days per source and day with 14 days of history.
    assert not made.duplicated(["source", "made_for", "granularity", "target_start_utc"]).any()
    assert not scored.duplicated(["source", "made_for", "model", "metric"]).any()
    assert sorted(made["made_for"].unique()) == forecast_for
    counts = made.groupby(["source", "made_for", "granularity"]).size()
    assert set(counts.loc[:, :, "half_hour"]) == {48} and set(counts.loc[:, :, "day"]) == {7}
    assert len(counts) == len(SOURCES) * len(forecast_for) * 2
    # Targets: the half hours after the day, then its next 7 local days.
    ends = made["made_for"].map(lambda d: pd.Timestamp(day_window_utc(d, TOKYO)[1]))
    step = made["granularity"].map(
        {"half_hour": pd.Timedelta(minutes=30), "day": pd.Timedelta(days=1)}
    )
    assert (made["target_start_utc"] == ends + step * (made["horizon"] - 1)).all()
    day_rows = made[made.granularity == "day"]
    targets = pd.to_datetime(day_rows["target_date_jst"]).dt.date
    after = [
        d + timedelta(days=h) for d, h in zip(day_rows.made_for, day_rows.horizon, strict=True)
    ]
    assert targets.tolist() == after
    assert (made["level"] == 80).all()
    # The interval holds the point; no energy below zero.
    assert (made["lower_kwh"] <= made["value_kwh"]).all()
    assert (made["value_kwh"] <= made["upper_kwh"]).all()
    assert (made["lower_kwh"] >= 0).all() and (made["upper_kwh"] > made["lower_kwh"]).any()

    # Accuracy: every metric of every candidate, the baseline among them, one chosen model,
    # the one whose half hours were stored; the window is the days backtested.
    assert set(scored["metric"]) == {"mae", "rmse", "mape", "wape"}
    for (source, made_for), group in scored.groupby(["source", "made_for"]):
        assert "SeasonalNaive" in set(group["model"])
        chosen = set(group.loc[group["chosen"], "model"])
        assert len(chosen) == 1
        hours = made[(made.source == source) & (made.made_for == made_for)]
        assert set(hours.loc[hours.granularity == "half_hour", "model"]) == chosen
        history = (made_for - days[0]).days + 1
        assert set(group["window_days"]) == {min(28, history - 14)}
        mae = group[group.metric == "mae"].set_index("model")["value"]
        assert mae[next(iter(chosen))] == mae.min()
    assert set(scored["made_for"]) == set(forecast_for) - {days[13]}  # no backtest on day 14

    # Days with too little history and days older than the window: done, no forecast.
    states = forecast_states(days)
    assert {states[d] for d in forecast_for} == {"ok"}
    assert {states[d] for d in days[:13]} == {"none"}
    assert "fewer than the 14 a forecast needs" in result.stderr
    assert "marked without a forecast" in result.stderr

    # Reproducible: the same history forecast again, here, gives the stored numbers exactly.
    day = days[-1]
    with duckdb.connect(str(pipeline_env.duckdb), read_only=True) as con:
        again = forecast_sources(read_history(con, day), day, TOKYO, forecast())
    stored = made[(made.made_for == day) & (made.granularity == "half_hour")]
    for result_of_source in again:
        ours = stored[stored.source == result_of_source.source].sort_values("horizon")
        assert ours["value_kwh"].tolist() == result_of_source.half_hours["value_kwh"].tolist()
        assert ours["lower_kwh"].tolist() == result_of_source.half_hours["lower_kwh"].tolist()

    # A rerun finds everything current and changes nothing, not even the file.
    before = (tables(pipeline_env), pipeline_env.duckdb.stat().st_ino)
    assert backfill(pipeline_env, len(days)).returncode == 0
    after = (tables(pipeline_env), pipeline_env.duckdb.stat().st_ino)
    pd.testing.assert_frame_equal(before[0][0], after[0][0])
    pd.testing.assert_frame_equal(before[0][1], after[0][1])
    assert before[1] == after[1]

    # Late data for a day: its forecast and those whose history or midnight split include it
    # are stale, then made again (by the same models from the same energy: the same numbers).
    late = days[-3]
    stamps = made_at(pipeline_env)
    pipeline_env.write(power_lines(late, [1], HOUR, source="meter9", power_w=lambda _: 300))
    stale = {late - timedelta(days=1), late, *days[-2:]}
    result = backfill(pipeline_env, len(days))
    assert result.returncode == 0, result.stderr
    remade = made_at(pipeline_env)
    assert {d for d in remade if remade[d] != stamps[d]} == stale
    pd.testing.assert_frame_equal(before[0][0], tables(pipeline_env)[0])
    assert set(forecast_states(days).values()) <= {"ok", "none"}


def test_too_little_history_completes_without_a_forecast(pipeline_env, luigid) -> None:
    days = recent_days(3)
    pipeline_env.write(household(days[0], len(days)))
    result = pipeline_env.cli(
        "RangeDaily", "--of", "ForecastDay", "--days-back", "3", "--scheduler-url", luigid.url
    )
    assert result.returncode == 0, result.stderr
    assert "meter1 has 3 day(s) of history" in result.stderr, result.stderr

    query = urllib.parse.urlencode({"data": json.dumps({"status": "DONE"})})
    with urllib.request.urlopen(f"{luigid.url}/api/task_list?{query}", timeout=10) as resp:
        done = json.loads(resp.read())["response"]
    messages = [t["status_message"] or "" for t in done.values() if t["name"] == "ForecastDay"]
    assert any("fewer than the 14 a forecast needs" in m for m in messages), messages
    with duckdb.connect(str(pipeline_env.duckdb), read_only=True) as con:
        assert con.execute(f"select count(*) from {FORECAST_TABLE}").fetchone()[0] == 0
        assert con.execute(f"select count(*) from {ACCURACY_TABLE}").fetchone()[0] == 0
    assert forecast_states([days[-1]]) == {days[-1]: "none"}
    status = pipeline_env.cli("-m", "pipeline", "status", "--days", "3")
    assert status.returncode == 0, status.stderr
    header, *rows = status.stdout.splitlines()
    assert "forecast" in header.split()
    assert rows[-1].split()[5] == "none"


def test_a_backfill_and_one_day_at_a_time_give_the_same_forecasts(
    pipeline_env, monkeypatch, tmp_path
) -> None:
    days = recent_days(16)
    pipeline_env.write(household(days[0], len(days)))
    assert backfill(pipeline_env, len(days)).returncode == 0
    batch = tables(pipeline_env)

    # Another installation, same InfluxDB: the history up to two days ago, then one day a
    # night. Tonight's load changes yesterday's last half hour (the midnight split), so
    # yesterday's forecast is made again in the same run.
    other = tmp_path / "nightly"
    for key, value in {
        "PARQUET_BASE_DIR": str(other / "parquet"),
        "DUCKDB_PATH": str(other / "duckdb" / "home_energy.duckdb"),
    }.items():
        monkeypatch.setenv(key, value)
        pipeline_env.env[key] = value
    pipeline_env.duckdb = other / "duckdb" / "home_energy.duckdb"
    history = ForecastDay.date.parse(f"{days[0]}-{days[-2]}")  # the end is exclusive
    assert pipeline_env.build(ForecastDay(date=history))
    for night in days[-2:]:
        assert pipeline_env.build(ForecastDay(date=night))
    nightly = tables(pipeline_env)
    assert len(batch[0]) > 0
    pd.testing.assert_frame_equal(batch[0], nightly[0])
    pd.testing.assert_frame_equal(batch[1], nightly[1])


@pytest.fixture(autouse=True)
def _fresh_config(pipeline_env) -> None:
    """Config objects are cached per process: read this test's environment."""
    Register.clear_instance_cache()


@pytest.mark.parametrize(
    ("setting", "value", "message"),
    [
        ("FORECAST_MIN_HISTORY_DAYS", "7", "[forecast] min_history_days = 7: the weekly models"),
        ("FORECAST_FIT_DAYS", "10", "[forecast] fit_days = 10: the weekly models need at least"),
        ("FORECAST_BACKTEST_DAYS", "0", "[forecast] backtest_days = 0 must be at least 1"),
    ],
)
def test_unworkable_settings_are_one_clear_error(monkeypatch, setting, value, message) -> None:
    monkeypatch.setenv(setting, value)
    Register.clear_instance_cache()
    with pytest.raises(PipelineError) as refused:
        checked_settings()
    assert message in str(refused.value) and "\n" not in str(refused.value)


def test_killed_at_any_point_the_next_run_finishes_the_forecast(pipeline_env) -> None:
    days = recent_days(15)
    pipeline_env.write(household(days[0], len(days)))
    command = ("RangeDaily", "--of", "DbtBuild", "--days-back", str(len(days)), "--local-scheduler")
    assert pipeline_env.cli(*command).returncode == 0
    forecast_day = ("ForecastDay", "--date", str(days[-1]), "--local-scheduler")
    for point in ("forecast.before_commit", "publish.loaded", "publish.verified"):
        killed = pipeline_env.cli(*forecast_day, extra_env={"PIPELINE_FAILPOINT": point})
        assert killed.returncode == -signal.SIGKILL, (point, killed.stderr)
        with duckdb.connect(str(pipeline_env.duckdb), read_only=True) as con:
            published = con.execute(
                "select count(*) from information_schema.tables where table_name = ?",
                [FORECAST_TABLE],
            ).fetchone()[0]
        assert published == 0, point  # the live file is the one before the run
        Register.clear_instance_cache()
        assert ForecastDay.bulk_complete(iter([days[-1]])) == []

    result = pipeline_env.cli(*forecast_day)
    assert result.returncode == 0, result.stderr
    Register.clear_instance_cache()
    assert ForecastDay.bulk_complete(iter([days[-1]])) == [days[-1]]
    made, scored = tables(pipeline_env)
    assert len(made) == len(SOURCES) * (48 + 7) and len(scored) > 0
    assert not list(pipeline_env.duckdb.parent.glob("*.next.duckdb*"))
