"""The household curve generator: reproducible, span-independent, weekdays, holidays, seasons."""

from __future__ import annotations

import json
from datetime import date

import numpy as np
import pandas as pd

from pipeline.household import days_off, half_hourly_energy, household_power_w

TZ = "Asia/Tokyo"


def test_power_depends_only_on_source_seed_and_half_hour() -> None:
    instants = pd.date_range("2025-06-01T00:00Z", periods=2000, freq="10min")
    whole = household_power_w("meter1", instants, TZ)
    assert np.array_equal(whole[700:], household_power_w("meter1", instants[700:], TZ))
    assert np.array_equal(whole, household_power_w("meter1", instants, TZ))
    assert not np.array_equal(whole, household_power_w("meter1", instants, TZ, seed=1))
    assert not np.array_equal(whole, household_power_w("meter2", instants, TZ))
    assert (whole > 0).all()


def test_japanese_holidays_and_weekends_are_days_off() -> None:
    off = days_off(date(2025, 11, 1), date(2025, 11, 30))
    assert date(2025, 11, 3) in off  # Culture Day, a Monday
    assert date(2025, 11, 24) in off  # substitute holiday for Labour Thanksgiving Day
    assert date(2025, 11, 1) in off and date(2025, 11, 2) in off  # Saturday, Sunday
    assert date(2025, 11, 4) not in off and date(2025, 11, 21) not in off


def test_curves_have_weekly_and_seasonal_shape() -> None:
    curves = half_hourly_energy(["meter1", "meter2"], date(2024, 1, 1), date(2025, 12, 31), TZ)
    local = curves["bucket_start_jst"]
    off = curves["date_jst"].isin(days_off(date(2024, 1, 1), date(2025, 12, 31)))
    early = local.dt.hour.between(6, 7)  # the working-day morning peak, before days off wake
    assert (
        curves[early & ~off]["energy_kwh"].mean() > 1.3 * curves[early & off]["energy_kwh"].mean()
    )
    midday = local.dt.hour.between(11, 15)
    assert curves[midday & off]["energy_kwh"].mean() > curves[midday & ~off]["energy_kwh"].mean()
    monthly = curves.groupby(local.dt.month)["energy_kwh"].sum()
    assert monthly[1] > 1.2 * monthly[5] and monthly[8] > 1.05 * monthly[5]


def test_seed_writes_household_readings(pipeline_env) -> None:
    day = date(2025, 11, 3)  # Culture Day
    result = pipeline_env.cli(
        "-m", "pipeline.seed", "--profile", "household", "--day", str(day),
        "--interval-minutes", "30", "--sources", "2", "--seed", "7",
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    assert "wrote 96 readings for meter1, meter2" in result.stdout
    answer = json.loads(
        pipeline_env.influx.query(
            "SELECT count(instant_power_w) FROM power GROUP BY source", db="home_energy"
        )
    )
    counts = {s["tags"]["source"]: s["values"][0][1] for s in answer["results"][0]["series"]}
    assert counts == {"meter1": 48, "meter2": 48}


def test_seed_refuses_an_unknown_profile(pipeline_env) -> None:
    result = pipeline_env.cli("-m", "pipeline.seed", "--profile", "office", "--day", "2025-11-03")
    assert result.returncode == 2
    assert "invalid choice: 'office'" in result.stderr
