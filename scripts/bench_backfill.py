#!/usr/bin/env python
"""Backfill speed (issues 4, 13): a year of one meter through luigid against its floor, then the
rerun when complete.

    .venv/bin/python scripts/bench_backfill.py [--days 365] [--repeat 3] [--workers 1]
        [--backfill-only] [--stages]

A private influxd and luigid (free ports, a temporary folder removed at the end) and one meter
read every 10 seconds over the `--days` local days ending yesterday (365 days: 3,153,600
readings; the seeding time is printed apart). Then, every command a cold process from the
repository with `--scheduler-url` pointing at the private luigid:

1. The floor (`FLOOR_SCRIPT` in scripts/_bench.py): per local day one InfluxDB query and one
   Parquet partition, then one DuckDB load of them all, no Luigi.
2. Backfill: `RangeDaily --of DuckLoadDay` over those days: wall time, readings/s, how many
   times the DuckDB file was published (the warehouse logs `published <path>` once per
   publish), and its ratio to the floor. Goal: <= 2.0 x the floor. Every reading must be in
   `raw_meter_readings`. `--stages` runs it through scripts/stage_times.py and prints where its
   time went (luigid round trips, queries, each task's run). Then the same backfill on a new
   installation with `--local-scheduler`, for comparison: what luigid adds. `--backfill-only`
   stops here.
3. `RangeDaily --of DbtBuild` on top: how many dbt builds ran (DbtBuild runs in
   `pipeline_runs`); one `fct_daily_energy` row per day is checked.
4. Rerun, everything complete: the same command over all the days, and over the last 7 days
   (both reach into the late-data lookback, so both ask InfluxDB for its per-day counts), and
   over the first 7 days (outside the lookback: folders and markers only); medians of
   `--repeat`. Goals: the full rerun <= 3 s and <= 1.5 x the 7-day one. A rerun that loads or
   publishes anything fails the benchmark.

The range is passed as `--start/--stop` with a `--days-back` wide enough not to clamp it and a
`--task-limit` above the day count: Luigi's RangeDaily defaults (100 days back, 50 tasks) would
otherwise cut a year's backfill to 50 days.
"""

from __future__ import annotations

import argparse
import re
import sys
import tempfile
import time
from collections import Counter
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, replace
from datetime import date, timedelta
from pathlib import Path

import duckdb

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _bench import (
    LUIGI,
    PYTHON,
    Row,
    Run,
    days_ago,
    exit_cleanly_on_sigterm,
    influx_server,
    median,
    pipeline_env,
    print_table,
    run_cold,
    run_floor,
    seed_readings,
    verdict,
)

from devstack.servers import InfluxServer, LuigidServer
from pipeline.publishing import sibling

STAGE_TIMES = Path(__file__).resolve().parent / "stage_times.py"
FLOOR_RATIO_GOAL = 2.0
RERUN_GOAL_S = 3.0
RERUN_RATIO_GOAL = 1.5
SHORT_RANGE_DAYS = 7
INTERVAL = timedelta(seconds=10)
SOURCE = "meter1"
BACKFILL_TIMEOUT_S = 3 * 3600
RERUN_TIMEOUT_S = 300
# One log record per publish, from pipeline/publishing.py (`published <live path> (previous...`).
# Luigi's console handler prints it as `INFO: published ...`; a handler on the root logger (which
# dbt's import used to add) would print it again as `INFO:luigi-interface:published ...`.
PUBLISHED_LINE = re.compile(r"^(\w+:(?:luigi-interface:)?) ?published \S+\.duckdb", re.MULTILINE)


@dataclass(frozen=True)
class Install:
    """One pipeline installation: its environment, luigid and the folder for command logs."""

    env: dict[str, str]
    scheduler_url: str | None  # None: Luigi's in-process scheduler (--local-scheduler)
    logs: Path
    duckdb_file: Path


@dataclass(frozen=True)
class Span:
    """Local days [first, stop) and what a rerun over them shows."""

    name: str
    first: date
    stop: date
    note: str = ""

    @property
    def days(self) -> int:
        return (self.stop - self.first).days

    def __str__(self) -> str:
        return f"{self.first}..{self.stop - timedelta(days=1)}"


def range_command(
    install: Install, span: Span, workers: int, of: str, stages: bool = False
) -> list[str]:
    """`luigi ... RangeDaily --of <task>` over the span, against the private luigid; with
    `stages`, run through scripts/stage_times.py (the same command, its stage times logged)."""
    days = span.days
    return [
        *([PYTHON, str(STAGE_TIMES)] if stages else [LUIGI]),
        "--module",
        "pipeline",
        "RangeDaily",
        "--of",
        of,
        "--start",
        span.first.isoformat(),
        "--stop",
        span.stop.isoformat(),
        # Luigi clamps --start to today - days-back, and requires at most task-limit days.
        "--days-back",
        str(days + 2),
        "--task-limit",
        str(days + 1),
        "--workers",
        str(workers),
        *(
            ["--scheduler-url", install.scheduler_url]
            if install.scheduler_url
            else ["--local-scheduler"]
        ),
    ]


def run_range(
    install: Install,
    log_name: str,
    span: Span,
    timeout_s: float,
    workers: int = 1,
    of: str = "DbtBuild",
    stages: bool = False,
) -> Run:
    command = range_command(install, span, workers, of, stages)
    return run_cold(command, install.env, install.logs / f"{log_name}.log", timeout_s)


def publishes_in(log: Path) -> int:
    """Publishes logged by one command, counted once however many handlers printed them."""
    per_format = Counter(PUBLISHED_LINE.findall(log.read_text(errors="replace")))
    return max(per_format.values(), default=0)


def runs_per_task(duckdb_file: Path) -> dict[str, int]:
    """Successful task runs (one per batch) in `pipeline_runs`, which lives beside the warehouse
    (pipeline/runlog.py): a run writes one row per day, all with the run's pid and duration."""
    with duckdb.connect(str(sibling(duckdb_file, "runs")), read_only=True) as con:
        rows = con.execute(
            "select task, count(distinct (pid, duration_s)) from pipeline_runs "
            "where status = 'SUCCESS' group by task"
        ).fetchall()
    return dict(rows)


def count_rows(duckdb_file: Path, table: str) -> int:
    with duckdb.connect(str(duckdb_file), read_only=True) as con:
        [(rows,)] = con.execute(f"select count(*) from {table}").fetchall()
        return rows


def check_rows(duckdb_file: Path, table: str, expected: int) -> None:
    """The backfill lost nothing: `expected` rows in `table`."""
    found = count_rows(duckdb_file, table)
    if found != expected:
        raise RuntimeError(f"backfill incomplete: {found:,} of {expected:,} rows in {table}")


def against_floor(
    install: Install,
    influx: InfluxServer,
    tmp: Path,
    year: Span,
    readings: int,
    workers: int,
    stages: bool,
) -> tuple[list[Row], float]:
    """The floor, then `RangeDaily --of DuckLoadDay` over the same days, and their ratio; the
    floor's seconds."""
    days = year.days
    floor = run_floor(
        influx, tmp / "floor", year.first, days, timedelta(days=1), BACKFILL_TIMEOUT_S
    )
    check_rows(tmp / "floor" / "floor.duckdb", "raw_meter_readings", readings)
    print(f"floor: {floor.seconds:.1f} s ({days} queries and partitions, one DuckDB load)")
    print(f"backfilling {year} ({days} days) --of DuckLoadDay through luigid ...")
    run = run_range(install, "backfill", year, BACKFILL_TIMEOUT_S, workers, "DuckLoadDay", stages)
    check_rows(install.duckdb_file, "raw_meter_readings", readings)
    publishes = publishes_in(install.logs / "backfill.log")
    loads = runs_per_task(install.duckdb_file).get("DuckLoadDay", 0)
    ratio = run.seconds / floor.seconds
    ok = verdict(ratio <= FLOOR_RATIO_GOAL)
    print(
        f"backfill: {run.seconds:.1f} s, {readings / run.seconds:,.0f} readings/s, "
        f"DuckDB published {publishes} times ({loads} DuckLoadDay batches), "
        f"peak RSS {run.peak_rss_mib:.0f} MiB; ratio to the floor {ratio:.2f} "
        f"(goal <= {FLOOR_RATIO_GOAL}): {ok}"
    )
    if stages:
        log = (install.logs / "backfill.log").read_text(errors="replace")
        print("\n".join(line for line in log.splitlines() if line.startswith("stage")))
    return [
        ("seeding influxd", "", f"{readings:,} readings"),
        ("floor", f"{floor.seconds:.1f} s", f"{days} days, peak RSS {floor.peak_rss_mib:.0f} MiB"),
        ("backfill --of DuckLoadDay", f"{run.seconds:.1f} s", f"{workers} worker(s)"),
        ("backfill throughput", f"{readings / run.seconds:,.0f} readings/s", ""),
        ("backfill / floor", f"{ratio:.2f}", f"goal <= {FLOOR_RATIO_GOAL}: {ok}"),
        ("DuckDB publishes", str(publishes), f"{loads} load batches"),
        ("backfill peak RSS", f"{run.peak_rss_mib:.0f} MiB", "the luigi command"),
    ], floor.seconds


def without_luigid(
    install: Install,
    influx: InfluxServer,
    tmp: Path,
    year: Span,
    readings: int,
    workers: int,
    floor_s: float,
) -> list[Row]:
    """The same backfill on a new installation with Luigi's in-process scheduler: what luigid's
    round trips (and its task history) add to the luigid figure. For comparison, no goal."""
    env = pipeline_env(influx, tmp / "pipeline-local")
    local = replace(install, env=env, scheduler_url=None, duckdb_file=Path(env["DUCKDB_PATH"]))
    run = run_range(local, "backfill-local", year, BACKFILL_TIMEOUT_S, workers, "DuckLoadDay")
    check_rows(local.duckdb_file, "raw_meter_readings", readings)
    print(
        f"backfill --local-scheduler: {run.seconds:.1f} s, ratio to the floor "
        f"{run.seconds / floor_s:.2f} (no luigid: for comparison)"
    )
    return [
        ("backfill, --local-scheduler", f"{run.seconds:.1f} s", f"{workers} worker(s), no luigid"),
        ("local-scheduler / floor", f"{run.seconds / floor_s:.2f}", "for comparison, no goal"),
    ]


def dbt_on_top(install: Install, year: Span, workers: int) -> list[Row]:
    """`RangeDaily --of DbtBuild` once the days are loaded: one daily row per day."""
    run = run_range(install, "dbt", year, BACKFILL_TIMEOUT_S, workers)
    check_rows(install.duckdb_file, "fct_daily_energy", year.days)
    builds = runs_per_task(install.duckdb_file).get("DbtBuild", 0)
    print(f"--of DbtBuild on top: {run.seconds:.1f} s, dbt built {builds} times")
    return [
        ("--of DbtBuild on top", f"{run.seconds:.1f} s", f"peak RSS {run.peak_rss_mib:.0f} MiB"),
        ("dbt builds", str(builds), ""),
    ]


def reruns(install: Install, spans: list[Span], repeat: int) -> dict[Span, float]:
    """Median wall time of the range command over each span of complete days, the spans taken
    in turn so that drift in the machine's load hits them alike. A rerun must change nothing."""
    seconds: dict[Span, list[float]] = {span: [] for span in spans}
    for n in range(repeat):
        for span in spans:
            log_name = f"rerun-{span.name}-{n}"
            seconds[span].append(run_range(install, log_name, span, RERUN_TIMEOUT_S).seconds)
            if publishes_in(install.logs / f"{log_name}.log"):
                raise RuntimeError(f"rerun {span.name}: complete days were published again")
    for span, runs in seconds.items():
        print(f"rerun {span.name} ({span}): " + ", ".join(f"{s:.2f} s" for s in runs))
    return {span: median(runs) for span, runs in seconds.items()}


@contextmanager
def workspace(keep: Path | None) -> Iterator[Path]:
    """A temporary folder removed at the end, or `keep` (created new, left in place)."""
    if keep:
        keep.mkdir(parents=True)
        yield keep.resolve()
        return
    with tempfile.TemporaryDirectory(prefix="bench-backfill-") as tmp:
        yield Path(tmp)


@contextmanager
def installation(tmp: Path) -> Iterator[tuple[Install, InfluxServer]]:
    """influxd and luigid on free ports, and the pipeline's environment pointing at them."""
    with influx_server(tmp) as influx, LuigidServer(tmp / "luigid") as luigid:
        logs = tmp / "logs"
        logs.mkdir()
        env = pipeline_env(influx, tmp / "pipeline")
        yield (
            Install(
                env=env,
                scheduler_url=luigid.url,
                logs=logs,
                duckdb_file=Path(env["DUCKDB_PATH"]),
            ),
            influx,
        )


def bench(
    tmp: Path, days: int, repeat: int, workers: int, backfill_only: bool, stages: bool
) -> list[Row]:
    stop = days_ago(0)  # today, excluded: the range ends yesterday
    first = stop - timedelta(days=days)
    week = timedelta(days=SHORT_RANGE_DAYS)
    year = Span(f"{days}-days", first, stop, "inside and outside the lookback")
    recent = Span(f"last-{SHORT_RANGE_DAYS}-days", stop - week, stop, "inside the lookback")
    oldest = Span(f"first-{SHORT_RANGE_DAYS}-days", first, first + week, "outside the lookback")
    with installation(tmp) as (install, influx):
        readings, seed_s = seed_readings(influx, first, days, INTERVAL, [SOURCE])
        print(
            f"seeded {readings:,} readings (1 meter every {INTERVAL.seconds} s, {days} days "
            f"from {first}) in {seed_s:.1f} s ({readings / seed_s:,.0f} readings/s into influxd)"
        )
        rows, floor_s = against_floor(install, influx, tmp, year, readings, workers, stages)
        rows[0] = ("seeding influxd", f"{seed_s:.1f} s", rows[0][2])
        rows += without_luigid(install, influx, tmp, year, readings, workers, floor_s)
        if backfill_only:
            return rows
        rows += dbt_on_top(install, year, workers)
        rerun_s = reruns(install, [year, recent, oldest], repeat)
    full_ok = rerun_s[year] <= RERUN_GOAL_S
    ratio = rerun_s[year] / rerun_s[recent]
    ratio_ok = ratio <= RERUN_RATIO_GOAL
    print(
        f"rerun: {days} days {rerun_s[year]:.2f} s (goal <= {RERUN_GOAL_S} s: "
        f"{verdict(full_ok)}), last {SHORT_RANGE_DAYS} days {rerun_s[recent]:.2f} s, "
        f"ratio {ratio:.2f} (goal <= {RERUN_RATIO_GOAL}: {verdict(ratio_ok)})"
    )
    return [
        *rows,
        *(
            (f"rerun {span.name}", f"{rerun_s[span]:.2f} s", f"median of {repeat}, {span.note}")
            for span in (year, recent, oldest)
        ),
        (f"rerun goal, {days} days", f"<= {RERUN_GOAL_S} s", verdict(full_ok)),
        (
            f"rerun ratio {days}/{SHORT_RANGE_DAYS} days",
            f"{ratio:.2f}",
            f"goal <= {RERUN_RATIO_GOAL}: {verdict(ratio_ok)}",
        ),
    ]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--days", type=int, default=365, help="local days ending yesterday")
    parser.add_argument("--repeat", type=int, default=3, help="cold runs of each rerun")
    parser.add_argument("--workers", type=int, default=1, help="luigi workers of the backfill")
    parser.add_argument(
        "--backfill-only",
        action="store_true",
        help="stop after the floor and the DuckLoadDay backfill (no dbt, no reruns)",
    )
    parser.add_argument(
        "--stages",
        action="store_true",
        help="run the backfill through scripts/stage_times.py and print where its time went",
    )
    parser.add_argument(
        "--keep", type=Path, help="work in this new folder and keep it (logs, data) afterwards"
    )
    args = parser.parse_args()
    if args.days <= SHORT_RANGE_DAYS:
        parser.error(f"--days must be more than {SHORT_RANGE_DAYS}")
    exit_cleanly_on_sigterm()
    started = time.perf_counter()
    with workspace(args.keep) as tmp:
        rows = bench(tmp, args.days, args.repeat, args.workers, args.backfill_only, args.stages)
    rows.append(("benchmark total", f"{time.perf_counter() - started:.0f} s", ""))
    print_table("summary (bench_backfill)", [("measure", "figure", "note"), *rows])


if __name__ == "__main__":
    main()
