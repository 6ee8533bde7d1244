"""DbtBuild on a DuckDB file written by the real pipeline from a real influxd."""

from __future__ import annotations

from datetime import date, timedelta

import duckdb
import pytest
from conftest import QUARTER_HOUR, power_lines

from pipeline.tasks import DbtBuild

D1 = date(2025, 12, 16)
GAP = range(96 - 4, 96 + 4)  # no readings from 23:00 of the first day to 01:00 of the second
RESET = 96 + 48  # noon of the second day


def constant_kw_lines(first: date, days: int) -> list[str]:
    """1 kW read every 15 minutes from `first` through the midnight after the last day, with a
    two-hour gap across the first midnight and a meter reset at noon of the second day."""
    return power_lines(
        first,
        (i for i in range(96 * days + 1) if i not in GAP),
        QUARTER_HOUR,
        power_w=lambda i: 1000,
        import_kwh=lambda i: 5000 + i / 4 if i < RESET else (i - RESET) / 4,
    )


def daily(env) -> dict[date, tuple]:
    with duckdb.connect(str(env.duckdb), read_only=True) as con:
        rows = con.execute(
            "select date_jst, daily_energy_kwh, reset_detected, reading_count "
            "from fct_daily_energy order by date_jst"
        ).fetchall()
    return {r[0]: r[1:] for r in rows}


def test_energy_gap_reset_and_late_neighbour(pipeline_env) -> None:
    pipeline_env.write(constant_kw_lines(D1, 3))
    d2, d3 = D1 + timedelta(days=1), D1 + timedelta(days=2)

    assert pipeline_env.build(DbtBuild(date=D1))
    # Without day 2 loaded, day 1 cannot know the energy of its last two hours yet.
    assert daily(pipeline_env)[D1][0] < 24 * 0.99

    span = DbtBuild.date.parse(f"{d2}-{d3 + timedelta(days=2)}")  # day 4 closes day 3
    assert pipeline_env.build(DbtBuild(date=span))
    result = daily(pipeline_env)
    for day in (D1, d2, d3):
        assert result[day][0] == pytest.approx(24.0, rel=0.01), day
        assert result[day][0] >= 0
    assert result[d2][1] is True  # the reset was seen, and cost nothing
    # Loading day 2 refreshed day 1 too: nothing is stale, a rerun changes nothing.
    assert DbtBuild.bulk_complete(iter([D1, d2, d3])) == [D1, d2, d3]
    before = (daily(pipeline_env), pipeline_env.duckdb.stat().st_ino)
    assert pipeline_env.build(DbtBuild(date=span), DbtBuild(date=D1))
    assert (daily(pipeline_env), pipeline_env.duckdb.stat().st_ino) == before


def test_dbt_build_publishes_and_keeps_prev(pipeline_env) -> None:
    pipeline_env.write(constant_kw_lines(D1, 1))
    assert pipeline_env.build(DbtBuild(date=D1))
    prev = pipeline_env.duckdb.with_name("home_energy.prev.duckdb")
    with duckdb.connect(str(prev), read_only=True) as con:
        # The previous file is the one the load published, before dbt ran.
        assert con.execute("select count(*) from raw_meter_readings").fetchone()[0] > 0
        tables = {
            t for (t,) in con.execute("select table_name from information_schema.tables").fetchall()
        }
    assert "fct_daily_energy" not in tables
    assert not pipeline_env.duckdb.with_name("home_energy.next.duckdb").exists()
