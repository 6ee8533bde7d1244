"""Backfills with RangeDaily and a real luigid, late data inside the lookback, one bad day."""

from __future__ import annotations

import json
import urllib.parse
import urllib.request
from datetime import date, datetime, timedelta
from zoneinfo import ZoneInfo

import duckdb
import pyarrow.parquet as pq
from conftest import hourly_lines, recent_days

from pipeline.days import day_window_utc
from pipeline.tasks import DuckLoadDay

TOKYO = ZoneInfo("Asia/Tokyo")


def task_list(luigid, status: str) -> dict[str, dict]:
    query = urllib.parse.urlencode({"data": json.dumps({"status": status})})
    with urllib.request.urlopen(f"{luigid.url}/api/task_list?{query}", timeout=10) as resp:
        return json.loads(resp.read())["response"]


def runs(env) -> list[tuple]:
    path = env.duckdb.with_name("home_energy.runs.duckdb")
    with duckdb.connect(str(path), read_only=True) as con:
        return con.execute(
            "select task, date, status, rows, duration_s, epoch(finished_at), pid, error "
            "from pipeline_runs order by finished_at"
        ).fetchall()


def test_range_schedules_only_missing_days_and_reports_progress(pipeline_env, luigid) -> None:
    days = recent_days(4)
    for day in days:
        pipeline_env.write(hourly_lines(day))
    assert pipeline_env.build(DuckLoadDay(date=days[0]), DuckLoadDay(date=days[2]))

    result = pipeline_env.cli(
        "RangeDaily", "--of", "DuckLoadDay", "--days-back", "4", "--scheduler-url", luigid.url
    )
    assert result.returncode == 0, result.stderr

    done = task_list(luigid, "DONE")
    extracted = sorted(t["params"]["date"] for t in done.values() if t["name"] == "ExtractDay")
    assert extracted == [str(days[1]), str(days[3])]  # only the missing days, never today
    loads = [t for t in done.values() if t["name"] == "DuckLoadDay"]
    assert loads and all(t["progress_percentage"] == 100 for t in loads)
    assert any("rows" in (t["status_message"] or "") for t in loads)
    with duckdb.connect(str(pipeline_env.duckdb), read_only=True) as con:
        assert con.execute("select count(*) from raw_meter_readings").fetchone()[0] == 4 * 24


def test_two_workers_never_run_a_day_twice_nor_write_duckdb_together(pipeline_env, luigid) -> None:
    days = recent_days(6)
    for day in days:
        pipeline_env.write(hourly_lines(day))
    command = [
        "RangeDaily",
        "--of",
        "DuckLoadDay",
        "--days-back",
        "6",
        "--scheduler-url",
        luigid.url,
        "--no-lock",  # two workers on purpose: Luigi's own process lock would stop the second
    ]
    # Batches of two days, and a writer that fails at once if another holds the DuckDB lock:
    # both workers succeeding proves no two writes ever overlapped.
    settings = {"DUCKDB_DAYS_PER_PUBLISH": "2", "DUCKDB_LOCK_TIMEOUT_S": "0"}
    workers = [pipeline_env.spawn(*command, extra_env=settings) for _ in range(2)]
    outputs = [w.communicate(timeout=300) for w in workers]
    assert [w.returncode for w in workers] == [0, 0], outputs

    log = [r for r in runs(pipeline_env) if r[2] == "SUCCESS"]
    for task in ("ExtractDay", "ParquetDay", "DuckLoadDay"):
        ran = sorted(r[1] for r in log if r[0] == task)
        assert ran == days, task  # every day once, none twice


def test_late_data_inside_the_lookback_rebuilds_only_that_day(pipeline_env) -> None:
    days = recent_days(3)
    for day in days:
        pipeline_env.write(hourly_lines(day))
    command = ("RangeDaily", "--of", "DbtBuild", "--days-back", "3", "--local-scheduler")
    assert pipeline_env.cli(*command).returncode == 0
    partitions = {
        day: pipeline_env.parquet / "raw_meter_readings" / f"dt={day}" / "part-0.parquet"
        for day in days
    }
    before = {day: path.stat().st_mtime_ns for day, path in partitions.items()}

    late = days[1]
    pipeline_env.write(hourly_lines(late, source="meter2"))  # an edge replays after an outage
    result = pipeline_env.cli(*command)
    assert result.returncode == 0, result.stderr

    assert pq.read_table(partitions[late]).num_rows == 48
    assert partitions[days[0]].stat().st_mtime_ns == before[days[0]]
    assert partitions[days[2]].stat().st_mtime_ns == before[days[2]]
    with duckdb.connect(str(pipeline_env.duckdb), read_only=True) as con:
        per_day = dict(
            con.execute(
                "select date_jst, count(*) from fct_daily_energy group by date_jst"
            ).fetchall()
        )
        loaded = con.execute("select count(*) from raw_meter_readings").fetchone()[0]
    assert per_day[late] == 2 and per_day[days[0]] == 1 and per_day[days[2]] == 1
    assert loaded == 3 * 24 + 24
    extracts = [r[1] for r in runs(pipeline_env) if r[0] == "ExtractDay"]
    assert sorted(extracts) == sorted([*days, late])


def test_one_bad_day_fails_alone_and_is_logged(pipeline_env) -> None:
    good = [date(2025, 1, 1), date(2025, 1, 2)]
    bad = date(2025, 1, 20)  # another InfluxDB shard, where the field could be written as text
    for day in good:
        pipeline_env.write(hourly_lines(day))
    start = int(day_window_utc(bad, TOKYO)[0].timestamp() * 1000)
    pipeline_env.write([f'power,source=meter1 instant_power_w="oops" {start}'])

    result = pipeline_env.cli(
        "RangeDaily",
        "--of",
        "DuckLoadDay",
        "--start",
        "2025-01-01",
        "--stop",
        "2025-01-22",
        "--days-back",
        "5000",  # Luigi's RangeDaily never reaches further back than days_back (default 100)
        "--local-scheduler",
    )
    assert result.returncode == 40
    log = runs(pipeline_env)
    failed = [r for r in log if r[2] == "FAILED"]
    assert [(r[0], r[1]) for r in failed] == [("ExtractDay", bad)]
    assert "not a number" in failed[0][7]
    loaded = sorted(r[1] for r in log if r[0] == "DuckLoadDay" and r[2] == "SUCCESS")
    expected = [date(2025, 1, 1) + timedelta(days=n) for n in range(21) if n != 19]
    assert loaded == expected
    assert datetime.now(TOKYO).date() not in loaded


def test_a_source_that_lost_readings_keeps_the_archive(pipeline_env) -> None:
    day = recent_days(1)[0]
    pipeline_env.write(hourly_lines(day))
    command = ("RangeDaily", "--of", "DuckLoadDay", "--days-back", "1", "--local-scheduler")
    assert pipeline_env.cli(*command).returncode == 0
    pipeline_env.influx.query("DROP MEASUREMENT power", db="home_energy")  # retention, a restore

    assert pipeline_env.cli(*command).returncode == 0
    landing = pipeline_env.parquet / "landing" / "power" / f"dt={day}"
    assert pq.read_table(landing).num_rows == 24
    with duckdb.connect(str(pipeline_env.duckdb), read_only=True) as con:
        assert con.execute("select count(*) from raw_meter_readings").fetchone()[0] == 24
