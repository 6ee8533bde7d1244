"""Base load and findings on constructed meters: each anomaly fires, normal days stay quiet.

Every meter draws the same weekly household curve from April 1 to June 30, 2025 (local
time; 0.15 kW at night, so a base load of 150 W), read every 15 minutes; the pipeline has
not loaded July yet, so there is no closing midnight reading. Each meter but `steady` adds
one anomaly:
- heater: 1.2 kW more from 08:00 to 20:00 on Wednesday June 18 (14.4 kWh);
- fridge: 60 W more at all hours from June 10 (the base load steps from 150 to 210 W);
- breaker: one power reading of 2,700 W at 19:15 on June 20 (30 A contract: 3,000 W);
- nopower: no power readings, 2.6 kW from 19:00 to 20:00 on June 20;
- gappy: no readings between 10:00 and 14:00 on June 12.
"""

from __future__ import annotations

from datetime import date, datetime, time, timedelta
from pathlib import Path

import pytest
from conftest import fetch
from insights_data import TOKYO, load, meter, new_database

from pipeline.dbt_runner import run_dbt_build

# `servers`: dbt builds on real DuckDB files, which take minutes, not the quick tier's seconds.
pytestmark = [pytest.mark.timeout(600), pytest.mark.servers]

FIRST, LAST = date(2025, 4, 1), date(2025, 6, 30)
HEATER_DAY = date(2025, 6, 18)
FRIDGE_FROM = date(2025, 6, 10)
SPIKE_AT = datetime(2025, 6, 20, 19, 15, tzinfo=TOKYO)
GAP_DAY = date(2025, 6, 12)


def household(at: datetime) -> float:
    """kW drawn: a weekday and a weekend curve, 0.15 kW from 01:00 to 05:00."""
    if 1 <= at.hour < 5:
        return 0.15
    if at.weekday() >= 5 and 10 <= at.hour < 17:
        return 0.6
    if 7 <= at.hour < 9 or 18 <= at.hour < 22:
        return 0.8 if 7 <= at.hour < 9 else 0.9
    return 0.3


def heater(at: datetime) -> float:
    return household(at) + (1.2 if at.date() == HEATER_DAY and 8 <= at.hour < 20 else 0.0)


def fridge(at: datetime) -> float:
    return household(at) + (0.06 if at.date() >= FRIDGE_FROM else 0.0)


def kettle_hour(at: datetime) -> float:
    return 2.6 if at.date() == date(2025, 6, 20) and at.hour == 19 else household(at)


def in_gap(at: datetime) -> bool:
    return at.date() == GAP_DAY and time(10) < at.time() < time(14)


def readings() -> list:
    meters = [
        meter("steady", FIRST, LAST, household),
        meter("heater", FIRST, LAST, heater),
        meter("fridge", FIRST, LAST, fridge),
        meter("breaker", FIRST, LAST, household, peaks={SPIKE_AT: 2700.0}),
        meter("nopower", FIRST, LAST, kettle_hour, with_power=False),
        meter("gappy", FIRST, LAST, household, skip=in_gap),
    ]
    return [r for readings in meters for r in readings if r.at.date() <= LAST]


@pytest.fixture(scope="module")
def built(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = new_database(tmp_path_factory.mktemp("findings") / "home_energy.duckdb")
    load(path, readings())
    run_dbt_build(path)
    return path


def findings(path: Path, source: str) -> list[tuple]:
    return fetch(
        path,
        "select date_jst, kind, observed_at, value, threshold, reason from fct_energy_findings "
        "where source = ? order by date_jst, kind, observed_at",
        [source],
    )


def test_a_steady_household_has_no_findings(built: Path):
    assert findings(built, "steady") == []


def test_base_load_is_the_low_night_demand_with_a_30_day_trend(built: Path):
    rows = fetch(
        built,
        "select date_jst, base_load_w, base_load_trend_w_per_day from fct_daily_base_load "
        "where source = 'steady' order by date_jst",
    )
    assert len(rows) == (LAST - FIRST).days + 1
    assert [row[1] for row in rows] == [pytest.approx(150.0)] * len(rows)
    assert [row[2] for row in rows[:6]] == [None] * 6  # fewer than 7 days
    assert {row[2] for row in rows[6:]} == {0.0}


def test_an_unusual_day_is_found_against_the_same_weekday(built: Path):
    [(day, kind, observed_at, score, threshold, reason)] = findings(built, "heater")
    assert (day, kind, threshold) == (HEATER_DAY, "unusual_day", 3.5)
    assert observed_at == datetime(2025, 6, 18, tzinfo=TOKYO)
    assert score > 3.5
    usual = (
        sum(
            household(datetime(2025, 6, 11, tzinfo=TOKYO) + timedelta(minutes=15 * n))
            for n in range(96)
        )
        / 4
    )
    assert f"usual {usual:.1f} kWh for a Wednesday" in reason
    assert f"Used {usual + 14.4:.1f} kWh" in reason


def test_a_rising_base_load_is_found_after_it_rises(built: Path):
    rows = findings(built, "fridge")
    assert rows, "no finding for a base load up from 150 to 210 W"
    assert {row[1] for row in rows} == {"base_load_rise"}
    assert min(row[0] for row in rows) > FRIDGE_FROM
    assert all(row[3] > row[4] >= 30 for row in rows)
    assert "base load has risen" in rows[0][5]
    trend = fetch(
        built,
        "select base_load_w, base_load_trend_w_per_day from fct_daily_base_load "
        "where source = 'fridge' and date_jst = ?",
        [LAST],
    )
    assert trend[0][0] == pytest.approx(210.0)
    assert trend[0][1] > 0


def test_a_power_peak_near_the_breaker_limit_is_found_in_its_half_hour(built: Path):
    [(day, kind, observed_at, value, threshold, reason)] = findings(built, "breaker")
    assert (day, kind, value, threshold) == (date(2025, 6, 20), "breaker_risk", 2700.0, 2400.0)
    assert observed_at == datetime(2025, 6, 20, 19, 0, tzinfo=TOKYO)
    assert reason.startswith("Power peaked at 2700 W from 19:00, 90 % of the 30 A contract")


def test_without_power_readings_the_half_hours_average_power_counts(built: Path):
    risks = [row for row in findings(built, "nopower") if row[1] == "breaker_risk"]
    assert [(row[2], row[3]) for row in risks] == [
        (datetime(2025, 6, 20, 19, 0, tzinfo=TOKYO), pytest.approx(2600.0)),
        (datetime(2025, 6, 20, 19, 30, tzinfo=TOKYO), pytest.approx(2600.0)),
    ]
    assert risks[0][5].startswith("Average power was 2600 W from 19:00")


def test_a_day_with_a_gap_has_low_coverage(built: Path):
    [(day, kind, observed_at, value, threshold, reason)] = findings(built, "gappy")
    assert (day, kind, threshold) == (GAP_DAY, "low_coverage", 0.9)
    assert observed_at == datetime(2025, 6, 12, tzinfo=TOKYO)
    assert value == pytest.approx(20 / 24, abs=1e-6)
    assert reason.startswith("Readings cover 83 % of the day")
