#!/usr/bin/env python
"""Forecast speed and quality (issue 10): the nightly ForecastDay over two years of 10 sources,
and the chosen models' half-hourly MAE against seasonal naive on realistic household curves.

    .venv/bin/python scripts/bench_forecast.py [--sources 10] [--days 730] [--repeat 2]
                                               [--origins 8]

Data: pipeline/household.py's curves (working days and days off with Japanese holidays,
seasons, days away, noise) for `--sources` meters over the `--days` local days up to
yesterday, written as half-hourly kWh straight into a DuckDB file's `fct_half_hourly_energy`
with a DbtBuild marker per day: the readings -> Parquet -> dbt path is not what is measured
here (scripts/bench_dbt.py measures it).

1. Speed: `--repeat` cold processes each run `ForecastDay(date=<yesterday>).run()`, the task's
   real run (history query, backtest, forecasts, publishing: copy, verify, swap), with no
   scheduler around it. Goal: at most 30 s.
2. Quality, out of sample: from `--origins` days spread over the last year, every source is
   forecast as ForecastDay does (backtest, choice, forecast of the next 48 half hours) and
   compared with what the curves did next; seasonal naive (the same half hour a week before)
   is scored on the same half hours. Goal: the chosen models' MAE at least 10 % lower. Also
   printed: how many actuals fall inside the 80 % intervals, and the next day's total from
   AutoETS against the same weekday a week before.
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from dataclasses import dataclass, field
from datetime import date, timedelta
from pathlib import Path
from zoneinfo import ZoneInfo

import duckdb
import numpy as np
import pandas as pd

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _bench import (
    PIPELINE_VARIABLES,
    PYTHON,
    TZ,
    days_ago,
    exit_cleanly_on_sigterm,
    load_average,
    median,
    print_table,
    run_cold,
    verdict,
)

from pipeline.config import forecast
from pipeline.forecast_models import WEEK, forecast_source
from pipeline.household import half_hourly_energy
from pipeline.markers import MarkerRow, marker_ids, write_markers
from pipeline.schema import SCHEMA_SQL
from pipeline.tasks import DbtBuild

SPEED_GOAL_S = 30.0
QUALITY_GOAL = 0.10
RUN_TIMEOUT_S = 600

MART_SQL = """
create table fct_half_hourly_energy as
select
    source,
    date_jst::date as date_jst,
    bucket_start_utc::timestamptz as bucket_start_utc,
    bucket_start_jst::timestamp as bucket_start_jst,
    round(energy_kwh, 6) as energy_kwh,
    null::double as export_kwh,
    1800.0 as covered_seconds,
    false as reset_detected
from curves
"""

# A worker gives a task its scheduler callbacks; here they print.
NIGHTLY = """
import time
from pipeline.forecast_task import ForecastDay
task = ForecastDay(date=ForecastDay.date.parse({day!r}))
task.set_status_message = lambda message: print(message)
task.set_progress_percentage = lambda percent: None
task.run()
print(f"cpu {{time.process_time():.2f}} s")
"""


def build_warehouse(path: Path, curves: pd.DataFrame, days: list[date]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    with duckdb.connect(str(path)) as con:
        con.execute(SCHEMA_SQL)
        con.register("curves", curves)
        con.execute(MART_SQL)
        ids = marker_ids(DbtBuild.get_task_family(), days)
        write_markers(
            con,
            [MarkerRow(ids[d], "fct_daily_energy", d, None, f"bench {d}") for d in days],
        )
        con.execute("checkpoint")


def nightly_env(live: Path) -> dict[str, str]:
    inherited = {k: v for k, v in os.environ.items() if not k.startswith(PIPELINE_VARIABLES)}
    return {**inherited, "DUCKDB_PATH": str(live), "TZ": TZ, "PYTHONPATH": str(Path.cwd())}


def speed(
    live: Path, yesterday: date, repeat: int, workdir: Path
) -> tuple[list[float], list[float], str]:
    """Wall and CPU seconds of each cold run, and the last run's status line."""
    seconds, cpu = [], []
    for n in range(repeat):
        log = workdir / f"nightly-{n}.log"
        run = run_cold(
            [PYTHON, "-c", NIGHTLY.format(day=yesterday.isoformat())],
            nightly_env(live),
            log,
            RUN_TIMEOUT_S,
        )
        *_, status, cpu_line = log.read_text().strip().splitlines()
        seconds.append(run.seconds)
        cpu.append(float(cpu_line.split()[1]))
        print(
            f"  nightly run {n + 1}: {run.seconds:.1f} s, {cpu[-1]:.1f} CPU s, "
            f"peak RSS {run.peak_rss_mib:.0f} MiB, load average {load_average()}"
        )
    return seconds, cpu, status


def backtest_figures(live: Path, yesterday: date) -> pd.DataFrame:
    with duckdb.connect(str(live), read_only=True) as con:
        return con.execute(
            "select source, model, value, chosen from forecast_accuracy "
            "where made_for = ? and metric = 'mae'",
            [yesterday],
        ).df()


@dataclass
class Scores:
    """Absolute errors out of sample, and whether each actual fell inside its interval."""

    chosen: list[np.ndarray] = field(default_factory=list)
    naive: list[np.ndarray] = field(default_factory=list)
    inside: list[np.ndarray] = field(default_factory=list)

    def add(self, forecast_rows: pd.DataFrame, actual: np.ndarray, naive: np.ndarray) -> None:
        self.chosen.append(np.abs(forecast_rows["value_kwh"].to_numpy() - actual))
        self.naive.append(np.abs(naive - actual))
        lower, upper = forecast_rows["lower_kwh"].to_numpy(), forecast_rows["upper_kwh"].to_numpy()
        self.inside.append((lower <= actual) & (actual <= upper))

    def mae(self) -> tuple[float, float]:
        return float(np.mean(self.chosen)), float(np.mean(self.naive))

    def coverage(self) -> float:
        return float(np.mean(self.inside))


def out_of_sample(curves: pd.DataFrame, origins: list[date]) -> tuple[Scores, Scores, dict]:
    """Half hours: the chosen models and seasonal naive (a week before) over the day after
    each origin. Days: AutoETS and the same weekday a week before, over the next day."""
    zone, settings = ZoneInfo(TZ), forecast()
    half_hours, days = Scores(), Scores()
    picks: dict[str | None, int] = {}
    for source, rows in curves.groupby("source"):
        series = rows.set_index("bucket_start_utc")["energy_kwh"]
        totals = rows.groupby("date_jst")["energy_kwh"].sum()
        for origin in origins:
            result = forecast_source(
                str(source), rows[rows.date_jst <= origin], origin, zone, settings
            )
            if result.half_hours is None or result.days is None:
                raise RuntimeError(f"{source}: no forecast made for {origin}: {result.skipped}")
            targets = result.half_hours["target_start_utc"]
            half_hours.add(
                result.half_hours,
                series.reindex(targets).to_numpy(),
                series.reindex(targets - pd.Timedelta(minutes=30) * WEEK).to_numpy(),
            )
            next_day = result.days[result.days["horizon"] == 1]
            days.add(
                next_day,
                totals.reindex([origin + timedelta(days=1)]).to_numpy(),
                totals.reindex([origin - timedelta(days=6)]).to_numpy(),
            )
            picks[result.chosen] = picks.get(result.chosen, 0) + 1
    return half_hours, days, picks


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--sources", type=int, default=10)
    p.add_argument("--days", type=int, default=730)
    p.add_argument("--repeat", type=int, default=2)
    p.add_argument("--origins", type=int, default=8)
    args = p.parse_args()
    exit_cleanly_on_sigterm()
    os.chdir(Path(__file__).resolve().parents[1])  # luigi.cfg is read from the repository

    yesterday = days_ago(1)
    days = [yesterday - timedelta(days=k) for k in range(args.days - 1, -1, -1)]
    sources = [f"meter{n}" for n in range(1, args.sources + 1)]
    started = time.perf_counter()
    curves = half_hourly_energy(sources, days[0], days[-1], TZ)
    print(
        f"{len(curves):,} half hours of {args.sources} household curves, {days[0]}..{days[-1]}, "
        f"generated in {time.perf_counter() - started:.1f} s and loaded DIRECTLY into "
        "fct_half_hourly_energy (not through readings, Parquet and dbt)"
    )
    with tempfile.TemporaryDirectory(prefix="bench-forecast-") as tmp:
        workdir = Path(tmp)
        live = workdir / "duckdb" / "home_energy.duckdb"
        build_warehouse(live, curves, days)
        print(f"load average {load_average()} before the nightly runs")
        seconds, cpu, summary = speed(live, yesterday, args.repeat, workdir)
        print(f"  last run's status: {summary}")
        backtest = backtest_figures(live, yesterday)

    chosen_bt = backtest[backtest.chosen]["value"].mean()
    naive_bt = backtest[backtest.model == "SeasonalNaive"]["value"].mean()
    # Origins over the last year, each with a full history behind it.
    span = min(360, args.days - forecast().history_days - 1)
    step = max(1, span // max(args.origins, 1))
    origins = [yesterday - timedelta(days=1 + k * step) for k in range(args.origins)]
    started = time.perf_counter()
    half_hours, days_ahead, picks = out_of_sample(curves, origins)
    chosen_mae, naive_mae = half_hours.mae()
    day_mae, day_naive_mae = days_ahead.mae()
    print(
        f"out-of-sample: {args.origins} origins x {args.sources} sources in "
        f"{time.perf_counter() - started:.0f} s; models chosen: {picks}"
    )
    gain = 1 - chosen_mae / naive_mae
    nightly = median(seconds)
    print_table(
        f"Forecast benchmark ({args.sources} sources, {args.days} days of half hours; "
        f"load average {load_average()})",
        [
            (
                "nightly ForecastDay (median, cold process)",
                f"{nightly:.1f} s",
                f"goal <= {SPEED_GOAL_S:.0f} s: {verdict(nightly <= SPEED_GOAL_S)}",
            ),
            (
                "its CPU time (median; the machine is shared)",
                f"{median(cpu):.1f} s",
                "about the wall time on an idle machine",
            ),
            (
                "half-hourly MAE, chosen models (out of sample)",
                f"{chosen_mae:.4f} kWh",
                f"{gain:+.1%} vs seasonal naive",
            ),
            ("half-hourly MAE, seasonal naive (out of sample)", f"{naive_mae:.4f} kWh", ""),
            (
                "improvement over seasonal naive",
                f"{gain:.1%}",
                f"goal >= {QUALITY_GOAL:.0%}: {verdict(gain >= QUALITY_GOAL)}",
            ),
            (
                "80 % intervals of the half hours: actuals inside",
                f"{half_hours.coverage():.1%}",
                "out of sample; 80 % when calibrated",
            ),
            (
                "next day's total MAE, AutoETS / week before",
                f"{day_mae:.2f} / {day_naive_mae:.2f} kWh",
                f"{1 - day_mae / day_naive_mae:+.1%}; intervals hold {days_ahead.coverage():.0%}",
            ),
            (
                "backtest MAE on the last 28 days, chosen / naive",
                f"{chosen_bt:.4f} / {naive_bt:.4f} kWh",
                "in sample: the choice was made on these",
            ),
        ],
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
