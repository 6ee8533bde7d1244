#!/usr/bin/env python
"""The marts written back to InfluxDB (InfluxWriteBackDay's work): a backfill and a night.

    .venv/bin/python scripts/bench_outputs.py [--days 730] [--sources 10] [--repeat 5]

A DuckDB file holds `--days` local days of the marts for `--sources` meters, at the shapes of
the contract (fct_daily_energy, fct_daily_cost, and fct_energy_forecast made each day for the
next 7 days and the next day's 48 half hours). A private influxd (free port, temporary folder)
takes them through the task's own functions (`mart_points`, `write_points`):

1. the whole range at once, as a backfill's batch does;
2. one day, `--repeat` times, as the nightly run does (median);
3. the whole range again: the same points must come out (a point is measurement+tags+time).
"""

from __future__ import annotations

import argparse
import resource
import sys
import tempfile
import time
from datetime import timedelta
from pathlib import Path
from zoneinfo import ZoneInfo

import duckdb

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _bench import TZ, Row, days_ago, exit_cleanly_on_sigterm, influx_server, load_average, median
from _bench import print_table as print_summary

from contracts.influx import InfluxSettings, make_client
from pipeline.influx_marts import write_back


def make_marts(path: Path, first, days: int, sources: int) -> None:
    with duckdb.connect(str(path)) as con:
        con.execute(
            f"""
            create table fct_daily_energy as
            select 'meter' || s as source, ?::date + d::integer as date_jst,
                   8 + (d % 7) + s * 0.1 as daily_energy_kwh, 0.0 as daily_export_kwh,
                   2500.0 + d as peak_w, 1.0 as coverage_ratio, 8640 as reading_count
            from range({sources}) t(s), range({days}) u(d)
            """,
            [first],
        )
        con.execute(
            """
            create table fct_daily_cost as
            select source, date_jst, daily_energy_kwh as energy_kwh, 0.0 as export_kwh,
                   daily_energy_kwh * 31 as energy_charge_yen, daily_energy_kwh * -2.5
                   as fuel_adjustment_yen, daily_energy_kwh * 3.49 as renewable_surcharge_yen,
                   0.0 as export_credit_yen, daily_energy_kwh * 31.99 as cost_yen
            from fct_daily_energy
            """
        )
        con.execute(
            f"""
            create table fct_energy_forecast as
            select source, date_jst as made_for, 'day' as granularity, h as horizon,
                   timezone('{TZ}', (date_jst + h::integer)::timestamp) as target_start_utc,
                   daily_energy_kwh as value_kwh, daily_energy_kwh * 0.8 as lower_kwh,
                   daily_energy_kwh * 1.2 as upper_kwh, 80 as level
            from fct_daily_energy, range(1, 8) t(h)
            union all
            select source, date_jst, 'half_hour', h,
                   timezone('{TZ}', (date_jst + 1)::timestamp) + to_minutes(30 * (h - 1)),
                   daily_energy_kwh / 48, daily_energy_kwh / 60, daily_energy_kwh / 40, 80
            from fct_daily_energy, range(1, 49) t(h)
            """
        )


def write(live: Path, settings: InfluxSettings, days: list) -> tuple[int, float]:
    """(points, seconds) of the task's write: DuckDB read and InfluxDB written a month a time."""
    started = time.perf_counter()
    with duckdb.connect(str(live), read_only=True) as con:
        points = write_back(con, days, ZoneInfo(TZ), settings)
    return points, time.perf_counter() - started


def snapshot(settings: InfluxSettings) -> list:
    client = make_client(settings)
    return [
        list(client.query(f"SELECT * FROM {m}", epoch="ms").get_points())
        for m in ("energy_daily", "energy_cost_daily", "energy_forecast")
    ]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--days", type=int, default=730)
    parser.add_argument("--sources", type=int, default=10)
    parser.add_argument("--repeat", type=int, default=5)
    args = parser.parse_args()
    exit_cleanly_on_sigterm()
    first = days_ago(args.days + 1)
    days = [first + timedelta(days=d) for d in range(args.days)]
    with tempfile.TemporaryDirectory() as tmp, influx_server(Path(tmp)) as influx:
        influx.query("CREATE DATABASE home_energy")
        settings = InfluxSettings(url=influx.url)
        live = Path(tmp) / "home_energy.duckdb"
        make_marts(live, first, args.days, args.sources)
        points, backfill_s = write(live, settings, days)
        # Before the snapshots below read every point back into this process.
        peak_mib = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
        before = snapshot(settings)
        nights = [write(live, settings, [days[-1 - n]]) for n in range(args.repeat)]
        again = write(live, settings, days)
        same = snapshot(settings) == before
    rows: list[Row] = [
        ("measure", "figure", "note"),
        (
            f"backfill: {args.days} days x {args.sources} sources",
            f"{backfill_s:.1f} s",
            f"{points:,} points, {points / backfill_s:,.0f}/s",
        ),
        (
            "one night (median)",
            f"{median([s for _, s in nights]):.2f} s",
            f"{nights[0][0]:,} points per day",
        ),
        ("backfill again", f"{again[1]:.1f} s", f"same points: {same}"),
        ("peak RSS after the backfill", f"{peak_mib:.0f} MiB", f"load average {load_average()}"),
    ]
    print_summary("InfluxDB write-back of the marts", rows)
    return 0 if same and again[0] == points else 1


if __name__ == "__main__":
    sys.exit(main())
