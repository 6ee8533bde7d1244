"""The cost marts against bills computed by hand from the published TEPCO rates.

Every expectation below is plain arithmetic on the rates as TEPCO Energy Partner publishes
them (tax included, in force from 2023-06-01) and METI's FY2025 renewable surcharge, never a
figure read from the models. The shipped seeds keep those rates; the tests replace only the
meter contracts and the fuel adjustments (the shipped ones are illustrative), and add one
made-up plan that prices weekdays, weekends and public holidays differently.

Sources (one DuckDB file, one full build; each dbt build costs seconds, so it is module-scoped):
- tiered: 従量電灯B 30 A, meter-reading day 10, 0.7 kW constant from July 10 to August 9:
  the 120 and 300 kWh tier boundaries fall inside a half hour in the middle of a day.
- tou: スマートライフS 40 A, August: 2 kW from 00:00 to 01:00 (the day rate's window runs
  06:00 to 01:00, across midnight), 1 kW from 01:00 to 06:00 (night rate), 0.4 kW otherwise.
- switcher: 従量電灯B 30 A until August 19, スマートライフL 6 kVA from August 20; 0.5 kW
  constant, exporting 0.1 kW.
- open: the '*' contract (従量電灯B 30 A, calendar months), 0.4 kW from September 1 to 10: the
  open period, with a negative fuel adjustment.
- weekly: the test's own plan, 1 kW constant through August (weekdays, weekends, 山の日).
"""

from __future__ import annotations

import csv
import math
from datetime import date, datetime, timedelta
from pathlib import Path

import pytest
from conftest import fetch
from insights_data import (
    load,
    meter,
    new_database,
    project_with_seeds,
    write_seeds,
)

from pipeline.dbt_runner import DBT_PROJECT_DIR, DbtBuildError, run_dbt_build

# `servers`: dbt builds on real DuckDB files, which take minutes, not the quick tier's seconds.
pytestmark = [pytest.mark.timeout(600), pytest.mark.servers]

# TEPCO Energy Partner, from 2023-06-01 (yen per kWh or per month, tax included).
JURYO_B_TIERS = [(0.0, 120.0, 29.80), (120.0, 300.0, 36.40), (300.0, math.inf, 40.49)]
JURYO_B_30A = 935.25
SMART_LIFE_DAY = 35.76  # 06:00 to 01:00
SMART_LIFE_NIGHT = 27.86  # 01:00 to 06:00
SMART_LIFE_S_40A = 1247.00
SMART_LIFE_L_PER_KVA = 311.75
EXPORT_RATE = 8.50  # 再エネ買取標準プラン
RENEWABLE_FY2025 = 3.98  # METI, April 2025 to March 2026
# The test's fuel adjustments (per kWh), negative in July and September.
FUEL = {7: -1.20, 8: 0.55, 9: -0.30}
MOUNTAIN_DAY = date(2025, 8, 11)  # 山の日, a Monday

TEST_SEEDS = {
    "meter_contracts": """
source,plan_id,contract_amperes,contract_kva,meter_reading_day,valid_from,valid_to
*,tepco_juryo_dento_b,30,,,2000-01-01,
tiered,tepco_juryo_dento_b,30,,10,2025-01-01,
tou,tepco_smart_life_s,40,,,2025-01-01,
switcher,tepco_juryo_dento_b,30,,,2025-01-01,2025-08-20
switcher,tepco_smart_life_l,,6,,2025-08-20,
weekly,test_weekly,30,,,2025-01-01,
""",
    "tariff_fuel_adjustments": """
provider,valid_from,valid_to,yen_per_kwh
tepco,2025-07-01,2025-08-01,-1.20
tepco,2025-08-01,2025-09-01,0.55
tepco,2025-09-01,2025-10-01,-0.30
""",
}
# A made-up plan with a rate per day type (appended to the shipped seeds).
WEEKLY_PLAN_SEEDS = {
    "tariff_plans": "test_weekly,testco,Test weekly plan,amperes,floor,false,2025-01-01,tests",
    "tariff_basic_charges": "test_weekly,2025-01-01,,,100.00,10.00",
    "tariff_energy_rates": """
test_weekly,2025-01-01,,weekday,08:00,22:00,0,,weekday_day,30.00
test_weekly,2025-01-01,,weekday,22:00,08:00,0,,weekday_night,20.00
test_weekly,2025-01-01,,weekend,00:00,24:00,0,,weekend,18.00
test_weekly,2025-01-01,,holiday,00:00,24:00,0,,holiday,15.00
""",
}

INSIGHT_TABLES = {
    "fct_half_hourly_cost": "source, bucket_start_utc",
    "fct_daily_cost": "source, date_jst",
    "fct_billing_period": "source, period_start",
    "fct_daily_base_load": "source, date_jst",
    "fct_energy_findings": "source, date_jst, kind, observed_at",
    "int_half_hourly_peak_power": "source, bucket_start_utc",
}


def tou_profile(at: datetime) -> float:
    return 2.0 if at.hour == 0 else 1.0 if at.hour < 6 else 0.4


def readings() -> list:
    return [
        *meter("tiered", date(2025, 7, 10), date(2025, 8, 9), lambda at: 0.7),
        *meter("tou", date(2025, 8, 1), date(2025, 8, 31), tou_profile),
        *meter("switcher", date(2025, 8, 1), date(2025, 8, 31), lambda at: 0.5, export_kw=0.1),
        *meter("open", date(2025, 9, 1), date(2025, 9, 10), lambda at: 0.4),
        *meter("weekly", date(2025, 8, 1), date(2025, 8, 31), lambda at: 1.0),
    ]


def costs_project(folder: Path) -> Path:
    project = project_with_seeds(folder, TEST_SEEDS)
    write_seeds(project, WEEKLY_PLAN_SEEDS, append=True)
    return project


def bill(basic: float, energy: float, fuel: float, renewable: float) -> float:
    """TEPCO rounds down to the yen: basic + energy + fuel, and the surcharge apart."""
    return math.floor(basic + energy + fuel) + math.floor(renewable)


def tiered_charge(kwh: float) -> float:
    return sum(rate * max(0.0, min(kwh, upper) - lower) for lower, upper, rate in JURYO_B_TIERS)


def period(path: Path, source: str) -> dict:
    rows = fetch(path, "select * from fct_billing_period where source = ?", [source])
    assert len(rows) == 1, rows
    columns = [c for (c,) in fetch(path, "select column_name from (describe fct_billing_period)")]
    return dict(zip(columns, rows[0], strict=True))


def assert_bill(row: dict, basic: float, energy: float, fuel: float, renewable: float) -> None:
    assert row["basic_charge_yen"] == pytest.approx(basic, abs=1e-4)
    assert row["energy_charge_yen"] == pytest.approx(energy, abs=1e-4)
    assert row["fuel_adjustment_yen"] == pytest.approx(fuel, abs=1e-4)
    assert row["renewable_surcharge_yen"] == pytest.approx(renewable, abs=1e-4)
    assert row["total_yen"] == bill(basic, energy, fuel, renewable)


def table(path: Path, name: str) -> list[tuple]:
    return fetch(path, f"select * from {name} order by {INSIGHT_TABLES[name]}")


@pytest.fixture(scope="module")
def project(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return costs_project(tmp_path_factory.mktemp("project"))


@pytest.fixture(scope="module")
def full_build(tmp_path_factory: pytest.TempPathFactory, project: Path) -> Path:
    path = new_database(tmp_path_factory.mktemp("full") / "home_energy.duckdb")
    load(path, readings())
    run_dbt_build(path, project_dir=project)
    return path


def test_three_tier_plan_crossing_both_boundaries_inside_a_half_hour(full_build: Path):
    kwh = 0.7 * 24 * 31
    row = period(full_build, "tiered")
    assert (row["period_start"], row["period_end"], row["days_in_period"]) == (
        date(2025, 7, 10),
        date(2025, 8, 10),
        31,
    )
    assert (row["is_open"], row["days_with_data"], row["plan_id"]) == (
        False,
        31,
        "tepco_juryo_dento_b",
    )
    assert row["energy_kwh"] == pytest.approx(kwh, abs=1e-6)
    assert_bill(
        row,
        basic=JURYO_B_30A,
        energy=120 * 29.80 + 180 * 36.40 + (kwh - 300) * 40.49,
        fuel=0.7 * 24 * (22 * FUEL[7] + 9 * FUEL[8]),
        renewable=kwh * RENEWABLE_FY2025,
    )
    assert row["projected_total_yen"] == row["total_yen"]
    # 0.35 kWh a half hour: the 343rd (July 17, 03:00) goes from 119.7 to 120.05 kWh.
    split = fetch(
        full_build,
        "select rate_kind, energy_charge_yen, energy_rate_yen_per_kwh from fct_half_hourly_cost "
        "where source = 'tiered' and bucket_start_jst = timestamp '2025-07-17 03:00'",
    )
    assert split == [
        (
            "tier_1+tier_2",
            pytest.approx(0.3 * 29.80 + 0.05 * 36.40),
            pytest.approx((0.3 * 29.80 + 0.05 * 36.40) / 0.35),
        )
    ]
    kinds = fetch(
        full_build,
        "select rate_kind, count(*) from fct_half_hourly_cost where source = 'tiered' "
        "group by rate_kind order by rate_kind",
    )
    assert kinds == [
        ("tier_1", 342),
        ("tier_1+tier_2", 1),
        ("tier_2", 514),
        ("tier_2+tier_3", 1),
        ("tier_3", 630),
    ]


def test_time_of_use_windows_across_midnight(full_build: Path):
    day_kwh, night_kwh = 2.0 + 0.4 * 18, 1.0 * 5
    kwh = 31 * (day_kwh + night_kwh)
    row = period(full_build, "tou")
    assert (row["period_start"], row["period_end"], row["is_open"]) == (
        date(2025, 8, 1),
        date(2025, 9, 1),
        False,
    )
    assert_bill(
        row,
        basic=SMART_LIFE_S_40A,
        energy=31 * (day_kwh * SMART_LIFE_DAY + night_kwh * SMART_LIFE_NIGHT),
        fuel=kwh * FUEL[8],
        renewable=kwh * RENEWABLE_FY2025,
    )
    rates = fetch(
        full_build,
        "select strftime(bucket_start_jst, '%H:%M'), rate_kind, energy_rate_yen_per_kwh "
        "from fct_half_hourly_cost where source = 'tou' and date_jst = date '2025-08-05' "
        "and strftime(bucket_start_jst, '%H:%M') in ('00:30', '01:00', '05:30', '06:00')",
    )
    assert sorted(rates) == [
        ("00:30", "day", SMART_LIFE_DAY),
        ("01:00", "night", SMART_LIFE_NIGHT),
        ("05:30", "night", SMART_LIFE_NIGHT),
        ("06:00", "day", SMART_LIFE_DAY),
    ]


def test_a_plan_change_mid_period_uses_each_plan_where_valid(full_build: Path):
    b_days, l_days = 19, 12
    b_kwh = 12.0 * b_days  # 228 kWh: the whole first tier and 108 kWh of the second
    row = period(full_build, "switcher")
    assert (row["plan_id"], row["contract_kva"], row["contract_amperes"]) == (
        "tepco_smart_life_l",
        6.0,
        None,
    )
    assert_bill(
        row,
        basic=JURYO_B_30A * b_days / 31 + 6 * SMART_LIFE_L_PER_KVA * l_days / 31,
        energy=tiered_charge(b_kwh) + l_days * (9.5 * SMART_LIFE_DAY + 2.5 * SMART_LIFE_NIGHT),
        fuel=12.0 * 31 * FUEL[8],
        renewable=12.0 * 31 * RENEWABLE_FY2025,
    )
    assert row["export_kwh"] == pytest.approx(0.1 * 24 * 31, abs=1e-6)
    assert row["export_credit_yen"] == pytest.approx(0.1 * 24 * 31 * EXPORT_RATE, abs=1e-4)
    plans = fetch(
        full_build,
        "select plan_id, min(date_jst), max(date_jst) from fct_daily_cost "
        "where source = 'switcher' group by plan_id order by 2",
    )
    assert plans == [
        ("tepco_juryo_dento_b", date(2025, 8, 1), date(2025, 8, 19)),
        ("tepco_smart_life_l", date(2025, 8, 20), date(2025, 8, 31)),
    ]


def test_the_open_period_has_cost_so_far_and_a_projection(full_build: Path):
    kwh = 0.4 * 24 * 10
    energy, fuel, renewable = kwh * 29.80, kwh * FUEL[9], kwh * RENEWABLE_FY2025
    row = period(full_build, "open")
    assert (row["period_start"], row["is_open"], row["days_with_data"], row["days_in_period"]) == (
        date(2025, 9, 1),
        True,
        10,
        30,
    )
    assert_bill(row, basic=JURYO_B_30A, energy=energy, fuel=fuel, renewable=renewable)
    assert row["cost_so_far_yen"] == pytest.approx(
        JURYO_B_30A * 10 / 30 + energy + fuel + renewable, abs=1e-4
    )
    assert row["projected_total_yen"] == bill(JURYO_B_30A, 3 * energy, 3 * fuel, 3 * renewable)


def test_public_holidays_and_weekends_take_their_own_rates(full_build: Path):
    days = [date(2025, 8, 1) + timedelta(days=n) for n in range(31)]
    weekends = [d for d in days if d.weekday() >= 5]
    weekdays = [d for d in days if d.weekday() < 5 and d != MOUNTAIN_DAY]
    assert (len(weekdays), len(weekends)) == (20, 10)
    energy = len(weekdays) * (14 * 30.00 + 10 * 20.00) + len(weekends) * 24 * 18.00 + 24 * 15.00
    row = period(full_build, "weekly")
    assert_bill(row, basic=100 + 10 * 30, energy=energy, fuel=0.0, renewable=744 * RENEWABLE_FY2025)
    holiday = fetch(
        full_build,
        "select distinct rate_kind from fct_half_hourly_cost "
        "where source = 'weekly' and date_jst = ?",
        [MOUNTAIN_DAY],
    )
    assert holiday == [("holiday",)]


def test_days_loaded_one_at_a_time_match_a_full_build(
    tmp_path: Path, project: Path, full_build: Path
):
    # August 5 is loaded last: it changes the tier of every later day of its periods.
    late = [date(2025, 8, 21), date(2025, 8, 6), date(2025, 8, 5)]
    everything = readings()
    path = new_database(tmp_path / "home_energy.duckdb")
    load(path, [r for r in everything if r.at.date() not in late])
    run_dbt_build(path, project_dir=project)
    assert table(path, "fct_billing_period") != table(full_build, "fct_billing_period")
    for day in late:
        load(path, everything, [day])
        run_dbt_build(path, start_date=day, end_date=day, project_dir=project)
    for name in INSIGHT_TABLES:
        assert table(path, name) == table(full_build, name), name


def test_an_edited_tariff_reaches_every_day_at_the_next_incremental_build(
    tmp_path: Path, full_build: Path
):
    path = tmp_path / "home_energy.duckdb"
    path.write_bytes(full_build.read_bytes())
    project = costs_project(tmp_path)
    write_seeds(
        project,
        {
            "tariff_fuel_adjustments": TEST_SEEDS["tariff_fuel_adjustments"].replace(
                "-1.20", "-2.00"
            )
        },
    )
    # A build for a day of another source's period: July's days are rebuilt all the same.
    run_dbt_build(path, start_date=date(2025, 9, 5), end_date=date(2025, 9, 5), project_dir=project)
    row = period(path, "tiered")
    assert row["fuel_adjustment_yen"] == pytest.approx(
        0.7 * 24 * (22 * -2.00 + 9 * FUEL[8]), abs=1e-4
    )


@pytest.fixture(scope="module")
def one_day(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A database with a day of readings and no dbt build yet."""
    path = new_database(tmp_path_factory.mktemp("one-day") / "home_energy.duckdb")
    return load(path, meter("meter1", date(2025, 8, 4), date(2025, 8, 4), lambda at: 0.5))


BAD_TARIFFS = {
    "overlapping validity": (
        {
            "tariff_energy_rates": "tepco_juryo_dento_b,2024-01-01,2023-07-01,all,00:00,24:00,0,,"
            "old,30.00"
        },
        [
            "validity_ranges_do_not_overlap_tariff_energy_rates",
            "plan_id=tepco_juryo_dento_b",
            "valid_from=2024-01-01",
            "valid_to is not after valid_from",
        ],
    ),
    "overlapping versions": (
        {"tariff_export_rates": "tepco_smart_life_s,2025-01-01,,9.00"},
        [
            "validity_ranges_do_not_overlap_tariff_export_rates",
            "plan_id=tepco_smart_life_s",
            "overlaps the version valid from",
        ],
    ),
    "a gap in time-of-use windows": (
        {
            "tariff_energy_rates": "tepco_test_gap,2023-06-01,,all,00:00,03:00,0,,night,20.00\n"
            "tepco_test_gap,2023-06-01,,all,03:30,24:00,0,,day,30.00",
            "tariff_plans": "tepco_test_gap,tepco,Gap,amperes,floor,false,2023-06-01,tests",
        },
        [
            "time_of_use_windows_cover_the_day",
            "plan_id=tepco_test_gap",
            "local_time=03:00",
            "no time-of-use window covers this half hour",
        ],
    ),
    "an unknown plan": (
        {"meter_contracts": "meter9,tepco_juryo_dento_c,30,,,2025-01-01,"},
        ["relationships_meter_contracts_plan_id", "tepco_juryo_dento_c"],
    ),
    "a negative rate": (
        {"tariff_renewable_surcharges": "2026,2026-04-01,2027-04-01,-1.00"},
        ["non_negative_tariff_renewable_surcharges_yen_per_kwh", "yen_per_kwh=-1.0"],
    ),
}


@pytest.mark.parametrize("case", BAD_TARIFFS)
def test_bad_tariff_data_fails_the_build_naming_the_row(case: str, one_day: Path, tmp_path: Path):
    seeds, expected = BAD_TARIFFS[case]
    path = tmp_path / "home_energy.duckdb"
    path.write_bytes(one_day.read_bytes())
    project = project_with_seeds(tmp_path, seeds, append=True)
    with pytest.raises(DbtBuildError) as failure:
        run_dbt_build(path, project_dir=project)
    message = str(failure.value)
    assert "\n" not in message
    for part in expected:
        assert part in message, (part, message)


def test_a_negative_fuel_adjustment_is_allowed(one_day: Path, tmp_path: Path):
    path = tmp_path / "home_energy.duckdb"
    path.write_bytes(one_day.read_bytes())
    project = costs_project(tmp_path)
    run_dbt_build(path, project_dir=project)
    day = fetch(path, "select energy_kwh, fuel_adjustment_yen from fct_daily_cost")
    assert day == [(pytest.approx(12.0), pytest.approx(12.0 * FUEL[8]))]
    # The seeds are loaded once: a rebuild with the same files skips them and their tests.
    assert run_dbt_build(path, project_dir=project).tests < 40


def shipped_fuel_adjustment(day: date) -> float:
    """The shipped (illustrative) TEPCO fuel adjustment for a day, read from the CSV file."""
    with (DBT_PROJECT_DIR / "seeds" / "tariff_fuel_adjustments.csv").open() as rows:
        return next(
            float(row["yen_per_kwh"])
            for row in csv.DictReader(rows)
            if date.fromisoformat(row["valid_from"]) <= day < date.fromisoformat(row["valid_to"])
        )


def test_the_shipped_example_seeds_build(one_day: Path, tmp_path: Path):
    path = tmp_path / "home_energy.duckdb"
    path.write_bytes(one_day.read_bytes())
    result = run_dbt_build(path)
    assert result.tests > 60  # the seeds' tests ran
    kwh = 12.0
    fuel = kwh * shipped_fuel_adjustment(date(2025, 8, 4))
    assert fetch(path, "select plan_id, total_yen from fct_billing_period") == [
        ("tepco_juryo_dento_b", bill(JURYO_B_30A, kwh * 29.80, fuel, kwh * RENEWABLE_FY2025))
    ]
