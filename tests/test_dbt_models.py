"""The dbt energy models, built through pipeline.dbt_runner on a real DuckDB file.

The readings: meter1 draws a constant 1 kW (and exports 0.2 kW), read every 15 minutes from
March 1 00:00 to March 6 00:00 Tokyo time, with no readings from 23:00 on March 2 to 01:00 on
March 3 (a two-hour gap across midnight); its counter resets to zero at 12:07:30 on March 4.
meter2 draws 0.5 kW on the same schedule and resets at the same instant, but sends no
instantaneous power. Every dbt invoke costs a few seconds, so builds are module-scoped fixtures.
"""

from __future__ import annotations

import shutil
import subprocess
import sys
from collections.abc import Iterable, Iterator
from datetime import UTC, date, datetime, timedelta
from pathlib import Path

import duckdb
import pytest
from conftest import fetch
from insights_data import TOKYO, insert_rows, local_midnight, new_database

from pipeline.dbt_runner import DbtBuildError, run_dbt_build

# `servers`: dbt builds on real DuckDB files, which take minutes, not the quick tier's seconds.
pytestmark = [pytest.mark.timeout(180), pytest.mark.servers]

FIRST_DAY = date(2025, 3, 1)
FULL_DAYS = [FIRST_DAY + timedelta(days=n) for n in range(5)]  # March 1-5, read all day
LAST_READING_DAY = date(2025, 3, 6)  # only the 00:00 reading that closes March 5
GAP = (datetime(2025, 3, 2, 23, tzinfo=TOKYO), datetime(2025, 3, 3, 1, tzinfo=TOKYO))
RESET_AT = datetime(2025, 3, 4, 12, 7, 30, tzinfo=TOKYO)
START_KWH = 1000.0

DAILY_COLUMNS = (
    "source, date_jst, daily_energy_kwh, daily_export_kwh, peak_w, peak_at, reading_count, "
    "first_reading_at, last_reading_at, coverage_ratio, reset_detected"
)
ENERGY_COLUMNS = "source, date_jst, daily_energy_kwh, daily_export_kwh, coverage_ratio"

Reading = tuple[datetime, str, float | None, float | None, float | None]


def reading_times() -> Iterator[datetime]:
    at = local_midnight(FIRST_DAY)
    while at <= local_midnight(LAST_READING_DAY):
        if not GAP[0] < at < GAP[1]:
            yield at
        at += timedelta(minutes=15)


def meter_readings() -> list[Reading]:
    """(local time, source, instant W, import kWh, export kWh) of both meters."""
    start = local_midnight(FIRST_DAY)
    readings: list[Reading] = []
    for at in reading_times():
        hours = (at - start) / timedelta(hours=1)
        counted = hours if at < RESET_AT else (at - RESET_AT) / timedelta(hours=1)
        offset = START_KWH if at < RESET_AT else 0.0
        readings.append((at, "meter1", 1000.0, offset + counted, 500.0 + 0.2 * hours))
        readings.append((at, "meter2", None, offset + 0.5 * counted, None))
    return readings


def database_with(path: Path, readings: Iterable[Reading], days: Iterable[date] = ()) -> Path:
    new_database(path)
    return load_days(path, readings, days) if days else load_all(path, readings)


def load_all(path: Path, readings: Iterable[Reading]) -> Path:
    return _insert(path, list(readings))


def load_days(path: Path, readings: Iterable[Reading], days: Iterable[date]) -> Path:
    """Like DuckLoadDay: the readings of the given local days, in their own transaction."""
    wanted = set(days)
    return _insert(path, [r for r in readings if r[0].date() in wanted])


def _insert(path: Path, readings: list[Reading]) -> Path:
    ingested = datetime(2025, 3, 10, tzinfo=UTC)
    rows = [
        (at.astimezone(UTC), at.replace(tzinfo=None), source, power, imported, exported, ingested)
        for at, source, power, imported, exported in readings
    ]
    return insert_rows(path, rows)


def daily(path: Path, columns: str = DAILY_COLUMNS) -> list[tuple]:
    return fetch(path, f"select {columns} from fct_daily_energy order by source, date_jst")


def half_hourly(path: Path) -> list[tuple]:
    return fetch(path, "select * from fct_half_hourly_energy order by source, bucket_start_utc")


def energy_by_day(path: Path, source: str = "meter1") -> dict[date, float | None]:
    rows = fetch(
        path,
        f"select date_jst, daily_energy_kwh from fct_daily_energy where source = '{source}'",
    )
    return dict(rows)


def count_in_another_process(path: Path, table: str) -> int:
    """Open the file read-write from a new process: this fails while any process holds it."""
    script = (
        "import duckdb, sys\n"
        "con = duckdb.connect(sys.argv[1])\n"
        "print(con.execute(f'select count(*) from {sys.argv[2]}').fetchone()[0])\n"
        "con.close()\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", script, str(path), table],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    return int(done.stdout)


@pytest.fixture(scope="module")
def readings() -> list[Reading]:
    return meter_readings()


@pytest.fixture(scope="module")
def full_build(tmp_path_factory: pytest.TempPathFactory, readings: list[Reading]) -> Path:
    path = database_with(tmp_path_factory.mktemp("full") / "home_energy.duckdb", readings)
    result = run_dbt_build(path)
    assert result.models == 12  # the energy marts and the insights (docs/insights.md)
    assert result.tests >= 20
    return path


def test_constant_load_gives_24_kwh_each_day_across_the_gap_and_the_reset(full_build: Path):
    meter1 = energy_by_day(full_build)
    for day in FULL_DAYS:
        assert meter1[day] == pytest.approx(24.0, rel=0.01), day
    # The gap's two hours are shared one each side of midnight, not lost.
    assert meter1[date(2025, 3, 2)] == pytest.approx(24.0, abs=1e-6)
    assert meter1[date(2025, 3, 3)] == pytest.approx(24.0, abs=1e-6)
    # The reset interval counts what the power read at its ends says (0.25 kWh), not
    # -1083.875, and not only the 0.125 kWh the counter shows since 12:07:30.
    assert meter1[date(2025, 3, 4)] == pytest.approx(24.0, abs=1e-6)
    # March 6 only has the 00:00 reading: no interval reaches into it.
    assert meter1[LAST_READING_DAY] is None
    # Without power readings the counter's new value is all that is known: the 0.0625 kWh it
    # counted since the reset; the 7.5 minutes before it are lost (0.5%).
    meter2 = energy_by_day(full_build, "meter2")
    assert meter2.pop(date(2025, 3, 4)) == pytest.approx(12.0 - 0.0625, abs=1e-6)
    assert set(meter2.values()) == {12.0, None}


def test_coverage_counts_readings_gaps_and_resets(full_build: Path):
    rows = fetch(
        full_build,
        "select date_jst, reading_count, coverage_ratio, reset_detected, daily_export_kwh "
        "from fct_daily_energy where source = 'meter1' order by date_jst",
    )
    assert rows == [
        (date(2025, 3, 1), 96, 1.0, False, pytest.approx(4.8)),
        (date(2025, 3, 2), 93, pytest.approx(23 / 24, abs=1e-6), False, pytest.approx(4.8)),
        (date(2025, 3, 3), 92, pytest.approx(23 / 24, abs=1e-6), False, pytest.approx(4.8)),
        (date(2025, 3, 4), 96, 1.0, True, pytest.approx(4.8)),
        (date(2025, 3, 5), 96, 1.0, False, pytest.approx(4.8)),
        (LAST_READING_DAY, 1, 0.0, False, None),
    ]


def test_half_hours_add_up_to_the_day_and_spread_the_gap(full_build: Path):
    buckets = fetch(
        full_build,
        "select date_jst, bucket_start_jst, energy_kwh, covered_seconds "
        "from fct_half_hourly_energy where source = 'meter1' order by bucket_start_utc",
    )
    assert len(buckets) == 5 * 48
    for day, total in energy_by_day(full_build).items():
        if total is not None:
            assert sum(b[2] for b in buckets if b[0] == day) == pytest.approx(total, abs=1e-6)
    gap_buckets = [
        b for b in buckets if GAP[0].replace(tzinfo=None) <= b[1] < GAP[1].replace(tzinfo=None)
    ]
    assert [(b[2], b[3]) for b in gap_buckets] == [(0.5, 0.0)] * 4
    reset_bucket = next(b for b in buckets if b[1] == datetime(2025, 3, 4, 12, 0))
    assert reset_bucket[2] == pytest.approx(0.5)


def test_peak_and_reading_instants(full_build: Path):
    row = fetch(
        full_build,
        "select peak_w, peak_at, first_reading_at, last_reading_at from fct_daily_energy "
        "where source = 'meter1' and date_jst = date '2025-03-03'",
    )[0]
    assert row[0] == 1000.0
    # Equal peaks all day: the earliest reading wins, so every build picks the same one.
    assert row[1] == row[2] == GAP[1]
    assert row[3] == datetime(2025, 3, 3, 23, 45, tzinfo=TOKYO)


def test_dates_do_not_depend_on_the_readers_time_zone(full_build: Path):
    expected_days = sorted({at.date() for at in reading_times()})
    con = duckdb.connect(str(full_build), read_only=True)
    try:
        for zone in ("UTC", "America/New_York", "Asia/Tokyo"):
            con.execute(f"set TimeZone = '{zone}'")
            view_days = con.execute(
                "select date_jst, min(ts_jst), count(*) from stg_meter_readings "
                "where source = 'meter1' group by date_jst order by date_jst"
            ).fetchall()
            assert [row[0] for row in view_days] == expected_days, zone
            assert view_days[0][1] == datetime(2025, 3, 1, 0, 0), zone
            assert [row[2] for row in view_days] == [96, 93, 92, 96, 96, 1], zone
    finally:
        con.close()


def test_null_kwh_readings_change_no_energy(
    tmp_path_factory: pytest.TempPathFactory, readings: list[Reading], full_build: Path
):
    # Readings with only instant power, including two inside the gap across midnight.
    extra = [(at + timedelta(minutes=7), src, power, None, None) for at, src, power, *_ in readings]
    extra += [(GAP[0] + timedelta(minutes=m), "meter1", 1000.0, None, None) for m in (30, 70)]
    path = database_with(tmp_path_factory.mktemp("nulls") / "home_energy.duckdb", readings + extra)
    run_dbt_build(path)
    assert daily(path, ENERGY_COLUMNS) == daily(full_build, ENERGY_COLUMNS)
    counts = dict(
        fetch(path, "select date_jst, reading_count from fct_daily_energy where source = 'meter1'")
    )
    assert counts[date(2025, 3, 3)] == 2 * 92 + 1  # the null readings are still readings


@pytest.fixture(scope="module")
def rerun(tmp_path_factory: pytest.TempPathFactory, full_build: Path) -> Path:
    """A copy of the full build, rebuilt incrementally for March 3 with nothing changed."""
    path = tmp_path_factory.mktemp("rerun") / "home_energy.duckdb"
    shutil.copyfile(full_build, path)
    run_dbt_build(path, start_date=date(2025, 3, 3), end_date=date(2025, 3, 3))
    return path


def test_an_incremental_rerun_changes_nothing(rerun: Path, full_build: Path):
    assert daily(rerun) == daily(full_build)
    assert half_hourly(rerun) == half_hourly(full_build)


def test_the_database_file_is_free_right_after_a_build(rerun: Path, tmp_path: Path):
    moved = tmp_path / "published.duckdb"
    rerun.rename(moved)
    try:
        assert count_in_another_process(moved, "fct_daily_energy") == 2 * 6
        con = duckdb.connect(str(moved))  # and in this process, read-write
        con.close()
    finally:
        moved.rename(rerun)


def test_days_loaded_one_by_one_and_out_of_order_match_a_full_build(
    tmp_path: Path, readings: list[Reading], full_build: Path, monkeypatch: pytest.MonkeyPatch
):
    # DuckDB takes its session TimeZone from TZ: these builds run in New York, the full build
    # in this machine's zone; the models convert explicitly, so the rows must still agree.
    monkeypatch.setenv("TZ", "America/New_York")
    march = {n: date(2025, 3, n) for n in range(1, 7)}
    path = database_with(tmp_path / "home_energy.duckdb", readings, [march[1], march[2]])
    run_dbt_build(path, start_date=march[1], end_date=march[2])
    assert energy_by_day(path)[march[2]] == pytest.approx(23.0)  # the last reading is 23:00

    # Loading March 3 gives March 2 its hour of the gap across midnight.
    load_days(path, readings, [march[3]])
    run_dbt_build(path, start_date=march[3], end_date=march[3])
    assert energy_by_day(path)[march[2]] == pytest.approx(24.0)

    # March 5-6 before March 4: one interval now runs from March 3 23:45 to March 5 00:00,
    # across the reset (its energy is the 11.875 kWh counted since), so March 3, two days
    # before the loaded ones, gets its 15 minutes' share.
    load_days(path, readings, [march[5], march[6]])
    run_dbt_build(path, start_date=march[5], end_date=march[6])
    share = 11.875 / 24.25  # per hour; half hours are rounded to 1e-6 kWh, hence abs=1e-4
    assert energy_by_day(path)[march[3]] == pytest.approx(23.75 + 0.25 * share, abs=1e-4)
    assert energy_by_day(path)[march[4]] == pytest.approx(24 * share, abs=1e-4)

    load_days(path, readings, [march[4]])
    run_dbt_build(path, start_date=march[4], end_date=march[4])
    assert daily(path) == daily(full_build)
    assert half_hourly(path) == half_hourly(full_build)

    run_dbt_build(path, full_refresh=True)
    assert daily(path) == daily(full_build)
    assert half_hourly(path) == half_hourly(full_build)


def test_a_source_name_with_a_quote_builds_incrementally(
    tmp_path: Path, readings: list[Reading], full_build: Path
):
    # The incremental window looks up each source's readings by its name in the SQL.
    renamed = [(at, "o'hara" if s == "meter2" else s, *values) for at, s, *values in readings]
    path = database_with(tmp_path / "home_energy.duckdb", renamed, FULL_DAYS[:2])
    run_dbt_build(path, start_date=FULL_DAYS[0], end_date=FULL_DAYS[1])
    load_days(path, renamed, [*FULL_DAYS[2:], LAST_READING_DAY])
    run_dbt_build(path, start_date=FULL_DAYS[2], end_date=LAST_READING_DAY)
    expected = [("o'hara" if r[0] == "meter2" else r[0], *r[1:]) for r in daily(full_build)]
    assert sorted(daily(path)) == sorted(expected)


def test_a_failing_data_test_raises_an_error_naming_it(tmp_path: Path, readings: list[Reading]):
    bad = (datetime(2025, 3, 1, 12, 7, tzinfo=TOKYO), "meter1", 1000.0, -3.0, None)
    path = database_with(tmp_path / "home_energy.duckdb", [*readings, bad], [FIRST_DAY])
    with pytest.raises(DbtBuildError) as failure:
        run_dbt_build(path)
    message = str(failure.value)
    assert "non_negative_raw_raw_meter_readings_energy_import_kwh" in message
    assert "Traceback" not in message
    # A failed build releases the file too.
    assert count_in_another_process(path, "raw_meter_readings") == 2 * 96 + 1


def test_a_failing_model_raises_an_error_naming_it_and_the_cause(
    tmp_path: Path, readings: list[Reading]
):
    path = database_with(tmp_path / "home_energy.duckdb", readings, [FIRST_DAY])
    with pytest.raises(DbtBuildError, match="Unknown TimeZone") as failure:
        run_dbt_build(path, time_zone="Mars/Olympus")
    assert "model fct_half_hourly_energy" in str(failure.value)


def test_bad_dates_are_refused_before_dbt_runs(tmp_path: Path):
    with pytest.raises(ValueError, match="before start_date"):
        run_dbt_build(tmp_path / "x.duckdb", start_date=date(2025, 3, 2), end_date=date(2025, 3, 1))
