#!/usr/bin/env python
"""dbt speed (issue 3): a daily incremental DbtBuild over a year of history vs one empty day.

    .venv/bin/python scripts/bench_dbt.py [--repeat 3] [--days 365] [--compare-rev REV]

A private influxd (free port, temporary folder removed at the end) gets one meter read every
10 seconds for `--days` (365) local days plus `--repeat` new days after them; every day lies
more than a week back, outside the late-data lookback. Every command below is a cold
`luigi --module pipeline ... --local-scheduler` process run from the repository:

1. The year goes into DuckDB with `RangeDaily --of DuckLoadDay` (3,153,600 readings; timed).
2. `DbtBuild --date <last day of the year>`: the initial build of the marts over the year.
3. Daily, `--repeat` times: `DuckLoadDay --date <new day>`, then the timed `DbtBuild --date
   <new day>` (incremental: the new day and its neighbours). Interleaved with it, on a fresh
   installation each time: `DuckLoadDay --date <a day without readings>`, then the timed
   `DbtBuild` of that empty day (dbt's fixed cost). Goals: incremental <= 2 x empty (medians),
   and incremental under 5 s (issue 13).
The marts are checked after each incremental build: one `fct_daily_energy` row per loaded day.

With `--compare-rev REV` (e.g. the commit before a set of new models), the same commands also
run from a checkout of REV (`git archive`, its own pipeline and dbt project) on a copy of the
year's installation, its daily DuckLoadDay and DbtBuild interleaved with the current tree's:
the incremental DbtBuild of both on the same data at the same time, and their ratio.
"""

from __future__ import annotations

import argparse
import io
import os
import re
import shutil
import subprocess
import sys
import tarfile
import tempfile
from dataclasses import dataclass
from datetime import date, timedelta
from pathlib import Path

import duckdb

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _bench import (
    REPO,
    Row,
    Run,
    days_ago,
    exit_cleanly_on_sigterm,
    influx_server,
    load_average,
    luigi_command,
    median,
    pipeline_env,
    print_table,
    run_cold,
    seed_readings,
    verdict,
)

from devstack.servers import InfluxServer

RATIO_GOAL = 2.0
INCREMENTAL_GOAL_S = 5.0  # issue 13: the daily incremental DbtBuild, a cold command
INTERVAL = timedelta(seconds=10)
READINGS_PER_DAY = int(timedelta(days=1) / INTERVAL)
NEWEST_DAY_AGO = 10  # older than the 7-day late-data lookback, so no day asks InfluxDB again
LOAD_TIMEOUT_S = 3 * 3600
BUILD_TIMEOUT_S = 900


# dbt.log lines that start an invocation, end its parse, and end it (timestamps HH:MM:SS.ffffff).
DBT_LOG_MARKS = (
    r"running dbt with arguments",
    r"Found \d+ models",
    r"Command end result",
)


def _clock(pattern: str, text: str) -> float:
    found = re.search(r"^(\d\d):(\d\d):(\d\d\.\d+) .*" + pattern, text, re.MULTILINE)
    if found is None:
        raise RuntimeError(f"dbt.log has no line matching {pattern!r}")
    hours, minutes, seconds = found.groups()
    return int(hours) * 3600 + int(minutes) * 60 + float(seconds)


class Install:
    """One pipeline installation (Parquet folder, DuckDB file) and the logs of its commands,
    run from the repository or from another checkout `repo`."""

    def __init__(self, influx: InfluxServer, folder: Path, repo: Path = REPO) -> None:
        folder.mkdir(parents=True, exist_ok=True)
        self.folder = folder
        self.repo = repo
        self.env = pipeline_env(influx, folder)
        if repo != REPO:
            self.env["PYTHONPATH"] = os.pathsep.join(
                [str(repo), *filter(None, [os.environ.get("PYTHONPATH")])]
            )

    @property
    def duckdb_file(self) -> Path:
        return Path(self.env["DUCKDB_PATH"])

    def run(self, name: str, task: str, *args: str, timeout_s: float = BUILD_TIMEOUT_S) -> Run:
        return run_cold(
            luigi_command(task, *args),
            self.env,
            self.folder / f"{name}.log",
            timeout_s,
            cwd=self.repo,
        )

    def day(self, task: str, day: date) -> Run:
        return self.run(f"{task}-{day}", task, "--date", day.isoformat())

    def dbt_phases(self) -> tuple[float, float]:
        """(parse, whole) seconds of the last dbt invocation, from the timestamps in dbt.log."""
        log = self.duckdb_file.parent / "dbt" / "logs" / "dbt.log"
        text = log.read_text(errors="replace")
        last = text[text.rfind("\n", 0, text.rindex(DBT_LOG_MARKS[0])) + 1 :]
        marks = [_clock(pattern, last) for pattern in DBT_LOG_MARKS]
        return (marks[1] - marks[0]) % 86400, (marks[2] - marks[0]) % 86400

    def count(self, table: str) -> int:
        with duckdb.connect(str(self.duckdb_file), read_only=True) as con:
            ((rows,),) = con.execute(f"select count(*) from {table}").fetchall()
            return rows


def load_year(install: Install, first: date, stop: date) -> Run:
    """RangeDaily over [first, stop); --days-back and --task-limit wide enough not to clamp it."""
    days_back = (days_ago(0) - first).days + 1
    return install.run(
        "year",
        "RangeDaily",
        "--of",
        "DuckLoadDay",
        "--start",
        first.isoformat(),
        "--stop",
        stop.isoformat(),
        "--days-back",
        str(days_back),
        "--task-limit",
        str(days_back + 1),
        timeout_s=LOAD_TIMEOUT_S,
    )


@dataclass(frozen=True)
class Build:
    """A timed DbtBuild command and, inside it, dbt's parse and whole invocation."""

    run: Run
    parse_s: float
    dbt_s: float

    def __str__(self) -> str:
        return f"{self.run.seconds:.2f} s (dbt {self.dbt_s:.2f} s, parse {self.parse_s:.2f} s)"


def build(install: Install, day: date) -> Build:
    run = install.day("DbtBuild", day)
    return Build(run, *install.dbt_phases())


def _build_row(name: str, builds: list[Build]) -> Row:
    """Medians of the command and of dbt's parse and whole invocation, and the highest peak."""
    return (
        f"{name} DbtBuild",
        f"{median([b.run.seconds for b in builds]):.2f} s",
        f"median of {len(builds)}: dbt {median([b.dbt_s for b in builds]):.2f} s, parse "
        f"{median([b.parse_s for b in builds]):.2f} s; peak RSS "
        f"{max(b.run.peak_rss_mib for b in builds):.0f} MiB",
    )


def checkout(rev: str, folder: Path) -> Path:
    """The repository's tree at `rev`, exported into `folder` (no .git, nothing else touched)."""
    archive = subprocess.run(
        ["git", "-C", str(REPO), "archive", "--format=tar", rev],
        capture_output=True,
        check=True,
    ).stdout
    with tarfile.open(fileobj=io.BytesIO(archive)) as tar:
        tar.extractall(folder, filter="data")
    return folder


def twin(install: Install, influx: InfluxServer, folder: Path, repo: Path) -> Install:
    """A copy of `install`'s Parquet folder and DuckDB file, run from `repo`."""
    shutil.copytree(install.folder / "parquet", folder / "parquet")
    (folder / "duckdb").mkdir(parents=True)
    shutil.copy2(install.duckdb_file, folder / "duckdb" / install.duckdb_file.name)
    return Install(influx, folder, repo)


def check_marts(install: Install, days: int) -> None:
    """One fct_daily_energy row per built day: the build did its job, not just exited 0."""
    rows = install.count("fct_daily_energy")
    if rows != days:
        raise RuntimeError(f"fct_daily_energy has {rows} rows after {days} days were built")


def compare_rows(rev: str | None, builds: list[Build], rev_builds: list[Build]) -> list[Row]:
    """The incremental DbtBuild at `rev` and this tree's time relative to it (medians)."""
    if rev is None:
        return []
    rev_s = median([b.run.seconds for b in rev_builds])
    this_s = median([b.run.seconds for b in builds])
    rev_dbt_s = median([b.dbt_s for b in rev_builds])
    this_dbt_s = median([b.dbt_s for b in builds])
    return [
        _build_row(f"incremental at {rev}", rev_builds),
        (
            f"this tree vs {rev}",
            f"{100 * (this_s / rev_s - 1):+.0f} %",
            f"command {this_s:.2f} s vs {rev_s:.2f} s; dbt {this_dbt_s:.2f} s vs {rev_dbt_s:.2f} s "
            f"({100 * (this_dbt_s / rev_dbt_s - 1):+.0f} %)",
        ),
    ]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--repeat", type=int, default=3, help="new days, and empty days, built")
    parser.add_argument("--days", type=int, default=365, help="days of history (a year)")
    parser.add_argument(
        "--compare-rev", help="also time DbtBuild from this git revision, interleaved"
    )
    args = parser.parse_args()
    exit_cleanly_on_sigterm()
    load_before = load_average()
    new_days = [days_ago(NEWEST_DAY_AGO + args.repeat - 1 - n) for n in range(args.repeat)]
    year_first = new_days[0] - timedelta(days=args.days)
    empty_days = [year_first - timedelta(days=1 + n) for n in range(args.repeat)]

    with (
        tempfile.TemporaryDirectory(prefix="bench-dbt-") as tmp,
        influx_server(Path(tmp)) as influx,
    ):
        readings, seconds = seed_readings(
            influx, year_first, args.days + args.repeat, INTERVAL, ["meter1"]
        )
        print(
            f"seeded {readings:,} readings (1 meter every 10 s, {year_first}..{new_days[-1]}) "
            f"in {seconds:.1f} s"
        )
        year = Install(influx, Path(tmp) / "year")
        loaded = load_year(year, year_first, new_days[0])
        raw = year.count("raw_meter_readings")
        size_mib = year.duckdb_file.stat().st_size / 2**20
        print(
            f"year loaded by RangeDaily --of DuckLoadDay in {loaded.seconds:.1f} s: "
            f"{raw:,} readings, DuckDB file {size_mib:.0f} MiB"
        )
        if raw != args.days * READINGS_PER_DAY:
            raise RuntimeError(f"raw_meter_readings has {raw:,} rows, expected a year's")
        other = None
        if args.compare_rev:
            other_repo = checkout(args.compare_rev, Path(tmp) / "rev")
            other = twin(year, influx, Path(tmp) / "year-rev", other_repo)
            other_initial = build(other, new_days[0] - timedelta(days=1))
            check_marts(other, args.days)
            print(f"initial DbtBuild over the year at {args.compare_rev}: {other_initial}")
        initial = build(year, new_days[0] - timedelta(days=1))
        check_marts(year, args.days)
        print(f"initial DbtBuild over the year: {initial}")

        incremental, empty, day_loads, other_incremental = [], [], [], []
        for n, (new_day, empty_day) in enumerate(zip(new_days, empty_days, strict=True)):
            day_loads.append(year.day("DuckLoadDay", new_day))
            incremental.append(build(year, new_day))
            check_marts(year, args.days + n + 1)
            if other is not None:
                other.day("DuckLoadDay", new_day)
                other_incremental.append(build(other, new_day))
                check_marts(other, args.days + n + 1)
                print(
                    f"  day {n + 1}: incremental DbtBuild at {args.compare_rev} "
                    f"{other_incremental[-1]}"
                )
            fresh = Install(influx, Path(tmp) / f"empty-{n}")
            fresh.day("DuckLoadDay", empty_day)
            empty.append(build(fresh, empty_day))
            print(
                f"  day {n + 1}: DuckLoadDay {day_loads[-1].seconds:.2f} s; incremental "
                f"DbtBuild {incremental[-1]}; empty-day DbtBuild {empty[-1]}"
            )

    incremental_s = median([b.run.seconds for b in incremental])
    empty_s = median([b.run.seconds for b in empty])
    ratio = incremental_s / empty_s
    ok = verdict(ratio <= RATIO_GOAL)
    print(
        f"incremental DbtBuild {incremental_s:.2f} s, empty-day DbtBuild {empty_s:.2f} s "
        f"(medians of {args.repeat}); ratio {ratio:.2f} (goal <= {RATIO_GOAL}): {ok}"
    )
    goal = f"goal < {INCREMENTAL_GOAL_S:g} s"
    in_time = verdict(incremental_s < INCREMENTAL_GOAL_S)
    print(f"incremental DbtBuild {incremental_s:.2f} s ({goal}): {in_time}")
    rows: list[Row] = [
        ("seeding influxd", f"{seconds:.1f} s", f"{readings:,} readings"),
        (
            "year load (RangeDaily DuckLoadDay)",
            f"{loaded.seconds:.1f} s",
            f"{raw:,} readings, {size_mib:.0f} MiB DuckDB",
        ),
        (
            "initial DbtBuild (full build)",
            f"{initial.run.seconds:.1f} s",
            f"dbt {initial.dbt_s:.1f} s, peak RSS {initial.run.peak_rss_mib:.0f} MiB",
        ),
        (
            "daily DuckLoadDay (8,640 readings)",
            f"{median([r.seconds for r in day_loads]):.2f} s",
            f"median of {args.repeat}",
        ),
        *(
            _build_row(name, builds)
            for name, builds in (("incremental", incremental), ("empty-day", empty))
        ),
        (
            "incremental DbtBuild, goal",
            f"{incremental_s:.2f} s",
            f"{goal}: {in_time}",
        ),
        ("ratio incremental/empty", f"{ratio:.2f}", f"goal <= {RATIO_GOAL}: {ok}"),
        *compare_rows(args.compare_rev, incremental, other_incremental),
        ("load average before/after", f"{load_before}/{load_average()}", "2 cores"),
    ]
    print_table("summary (bench_dbt)", [("measure", "figure", "note"), *rows])


if __name__ == "__main__":
    main()
