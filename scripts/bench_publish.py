#!/usr/bin/env python
"""Nightly publish against the size of the history (issue 13): 1 year versus 10 years.

    .venv/bin/python scripts/bench_publish.py [--years 1 10] [--modes swap alternate] [--nights 3]

For each history length a warehouse is generated directly with DuckDB SQL, not through the
pipeline (a decade through the pipeline would take hours): one meter read every 10 seconds
(3,153,600 readings a year) in the real `raw_meter_readings` schema, a DuckLoadDay marker per
day, the marts of a full `dbt build`, and a DbtBuild marker per day. A private influxd holds
the new days that follow the history (more than a week back, outside the late-data lookback);
their Parquet partitions are made untimed with `ParquetDay`.

Then, per publish mode (`DUCKDB_PUBLISH_MODE`) and history, on its own copy of the generated
warehouse, night after night (each night every installation in turn): the timed cold commands
`DuckLoadDay --date <new day>` and `DbtBuild --date <new day>` (the nightly publish of one
day). The first night is a warm-up and not counted (the `alternate` mode makes its second file
then, once). Figures are medians of `--nights`; "publishing" is the time the pipeline logs for
its publishing steps (copy or catch-up, verify, checkpoint, swap), both commands together.

Goals: the nightly (DuckLoadDay + DbtBuild) 10 years / 1 year ratio at most 1.3, and the daily
incremental DbtBuild under 5 s.
"""

from __future__ import annotations

import argparse
import contextlib
import io
import re
import shutil
import sys
import tempfile
import time
from dataclasses import dataclass
from datetime import date, datetime, timedelta
from pathlib import Path
from zoneinfo import ZoneInfo

import duckdb

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _bench import (
    TZ,
    Row,
    days_ago,
    exit_cleanly_on_sigterm,
    influx_server,
    load_average,
    luigi_command,
    median,
    pipeline_env,
    print_table,
    run_cold,
    verdict,
)

from contracts.influx import InfluxSettings, make_client
from pipeline.dbt_runner import run_dbt_build
from pipeline.markers import mark_dbt_days, marker_ids
from pipeline.schema import MARKER_TABLE, RAW_TABLE, SCHEMA_SQL
from pipeline.tasks import DbtBuild, DuckLoadDay

RATIO_GOAL = 1.3
DBT_GOAL_S = 5.0
INTERVAL_S = 10
NEWEST_DAY_AGO = 10  # older than the 7-day late-data lookback: no day asks InfluxDB again
COMMAND_TIMEOUT_S = 900
# The published log line of the pipeline: "published ... in 1.23 s" (both modes log it).
PUBLISHED = re.compile(r"published .* in (\d+\.\d+) s")

# One meter's readings over [$start, $stop): a daily curve and a counter that is its integral
# (closed form, so that a decade needs no window over all its rows).
READINGS_SQL = """
select
    ts as ts_utc,
    timezone($tz, ts) as ts_jst,
    'meter1' as source,
    round(500 + 300 * sin(2 * pi() * epoch(ts) / 86400) + hash(epoch(ts)) % 50, 1)
        as instant_power_w,
    -- 0.5 kW on average, with noise below a reading's increment (the counter never drops):
    -- digits like a real meter's, which compress as poorly.
    round(0.5 * (epoch(ts) - epoch($origin::timestamptz)) / 3600 + hash(ts) % 1000 / 1e6, 6)
        as energy_import_kwh,
    null::double as energy_export_kwh,
    now() as ingested_at
from range($start::timestamptz, $stop::timestamptz, interval 10 second) as t(ts)
"""


def local_midnight(day: date) -> datetime:
    return datetime.combine(day, datetime.min.time(), tzinfo=ZoneInfo(TZ))


def generate_history(path: Path, first: date, stop: date) -> float:
    """The warehouse of [first, stop) as the pipeline would have built it; seconds taken."""
    started = time.perf_counter()
    days = [first + timedelta(days=n) for n in range((stop - first).days)]
    path.parent.mkdir(parents=True, exist_ok=True)
    with duckdb.connect(str(path)) as con:
        con.execute(SCHEMA_SQL)
        for year_start in days[::365]:  # a year per statement bounds the memory
            year_stop = min(year_start + timedelta(days=365), stop)
            con.execute(
                f"insert into {RAW_TABLE} {READINGS_SQL}",
                {
                    "tz": TZ,
                    "origin": local_midnight(first),
                    "start": local_midnight(year_start),
                    "stop": local_midnight(year_stop),
                },
            )
        ids = marker_ids(DuckLoadDay.get_task_family(), days)
        con.executemany(
            f"insert into {MARKER_TABLE} values (?, ?, now(), ?, ?, ?)",
            [[ids[d], RAW_TABLE, d, 86400 // INTERVAL_S, f"generated-{d}"] for d in days],
        )
    with contextlib.redirect_stdout(io.StringIO()):  # dbt's progress lines
        run_dbt_build(path, time_zone=TZ)
    with duckdb.connect(str(path)) as con:
        mark_dbt_days(con, DbtBuild.get_task_family(), DuckLoadDay.get_task_family(), days)
        con.execute("checkpoint")
    return time.perf_counter() - started


def write_new_days(settings: InfluxSettings, origin: date, first: date, stop: date) -> int:
    """The readings of [first, stop) in InfluxDB, continuing the generated history's counter."""
    with duckdb.connect() as con:
        rows = con.execute(
            f"select epoch_ms(ts_utc), instant_power_w, energy_import_kwh from ({READINGS_SQL})",
            {
                "tz": TZ,
                "origin": local_midnight(origin),
                "start": local_midnight(first),
                "stop": local_midnight(stop),
            },
        ).fetchall()
    lines = [
        f"{settings.measurement},source=meter1 instant_power_w={p},energy_import_kwh={e} {t}"
        for t, p, e in rows
    ]
    client = make_client(settings)
    client.create_database(settings.database)
    client.write(lines, params={"db": settings.database, "precision": "ms"}, protocol="line")
    return len(lines)


@dataclass(frozen=True)
class Night:
    load_s: float
    build_s: float
    publish_s: float  # the publishing steps the pipeline logged, both commands

    @property
    def total_s(self) -> float:
        return self.load_s + self.build_s


class Install:
    """One pipeline installation: a copy of a generated warehouse, one publish mode."""

    def __init__(self, influx, folder: Path, warehouse: Path, parquet: Path, mode: str) -> None:
        self.folder = folder
        self.env = {**pipeline_env(influx, folder), "DUCKDB_PUBLISH_MODE": mode}
        live = Path(self.env["DUCKDB_PATH"])
        live.parent.mkdir(parents=True)
        shutil.copyfile(warehouse, live)
        shutil.copytree(parquet, folder / "parquet")

    def run(self, task: str, day: date) -> tuple[float, float]:
        """(command seconds, publishing seconds it logged)."""
        log = self.folder / f"{task}-{day}.log"
        command = luigi_command(task, "--date", day.isoformat())
        run = run_cold(command, self.env, log, COMMAND_TIMEOUT_S)
        publish = sum(float(s) for s in PUBLISHED.findall(log.read_text(errors="replace")))
        return run.seconds, publish

    def night(self, day: date) -> Night:
        load_s, load_publish = self.run("DuckLoadDay", day)
        build_s, build_publish = self.run("DbtBuild", day)
        return Night(load_s, build_s, load_publish + build_publish)

    def size_mib(self) -> float:
        """The database files on disk (the alternate mode's links are not files)."""
        files = (self.folder / "duckdb").glob("*.duckdb")
        return sum(p.stat().st_size for p in files if not p.is_symlink()) / 2**20


def prepare_partitions(folder: Path, influx, days: list[date]) -> Path:
    """The new days' Parquet partitions (ExtractDay and ParquetDay), untimed, shared by all;
    their folder."""
    folder.mkdir()
    env = pipeline_env(influx, folder)
    for day in days:
        run_cold(
            luigi_command("ParquetDay", "--date", day.isoformat()),
            env,
            folder / f"ParquetDay-{day}.log",
            COMMAND_TIMEOUT_S,
        )
    return folder / "parquet"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--years", type=int, nargs="+", default=[1, 10], help="history lengths")
    parser.add_argument("--modes", nargs="+", default=["swap", "alternate"], help="publish modes")
    parser.add_argument("--nights", type=int, default=3, help="timed nights (after a warm-up)")
    args = parser.parse_args()
    exit_cleanly_on_sigterm()
    load_before = load_average()
    new_days = [days_ago(NEWEST_DAY_AGO + args.nights - n) for n in range(args.nights + 1)]
    results: dict[tuple[str, int], list[Night]] = {}
    sizes: dict[int, float] = {}
    with (
        tempfile.TemporaryDirectory(prefix="bench-publish-") as tmp,
        influx_server(Path(tmp)) as influx,
    ):
        longest = new_days[0] - timedelta(days=365 * max(args.years))
        written = write_new_days(
            InfluxSettings(url=influx.url), longest, new_days[0], new_days[-1] + timedelta(days=1)
        )
        parquet = prepare_partitions(Path(tmp) / "partitions", influx, new_days)
        print(f"{written:,} readings of {len(new_days)} new days in influxd and Parquet")
        installs: dict[tuple[str, int], Install] = {}
        for years in sorted(args.years):
            first = new_days[0] - timedelta(days=365 * years)
            warehouse = Path(tmp) / f"history-{years}y" / "duckdb" / "home_energy.duckdb"
            seconds = generate_history(warehouse, first, new_days[0])
            sizes[years] = warehouse.stat().st_size / 2**20
            print(
                f"{years} y of history generated in {seconds:.0f} s: {sizes[years]:.0f} MiB DuckDB"
            )
            for mode in args.modes:
                folder = Path(tmp) / f"{mode}-{years}y"
                installs[mode, years] = Install(influx, folder, warehouse, parquet, mode)
            shutil.rmtree(warehouse.parent.parent)
        # Night by night, every installation in turn: a change in the machine's load (it is
        # shared) then weighs on all of them alike, not on one history length.
        for n, day in enumerate(new_days):
            for (mode, years), install in installs.items():
                night = install.night(day)
                print(
                    f"  {years} y {mode} night {n}{' (warm-up)' if n == 0 else ''}: "
                    f"DuckLoadDay {night.load_s:.2f} s + DbtBuild {night.build_s:.2f} s = "
                    f"{night.total_s:.2f} s; publishing {night.publish_s:.2f} s"
                )
                if n:
                    results.setdefault((mode, years), []).append(night)
        for (mode, years), install in installs.items():
            print(f"  {years} y {mode}: warehouse files {install.size_mib():.0f} MiB")

    rows: list[Row] = [("measure", "figure", "note")]
    low, high = min(args.years), max(args.years)
    for mode in args.modes:
        for years in sorted(args.years):
            nights = results[mode, years]
            rows.append(
                (
                    f"{mode}, {years} y ({sizes[years]:.0f} MiB): nightly",
                    f"{median([n.total_s for n in nights]):.2f} s",
                    f"DuckLoadDay {median([n.load_s for n in nights]):.2f} s, DbtBuild "
                    f"{median([n.build_s for n in nights]):.2f} s, publishing "
                    f"{median([n.publish_s for n in nights]):.2f} s (medians of {args.nights})",
                )
            )
        if low != high:
            ratio = median([n.total_s for n in results[mode, high]]) / median(
                [n.total_s for n in results[mode, low]]
            )
            rows.append(
                (
                    f"{mode}: nightly {high} y / {low} y",
                    f"{ratio:.2f}",
                    f"goal <= {RATIO_GOAL}: {verdict(ratio <= RATIO_GOAL)}",
                )
            )
        build_s = median([n.build_s for n in results[mode, high]])
        rows.append(
            (
                f"{mode}: daily DbtBuild at {high} y",
                f"{build_s:.2f} s",
                f"goal < {DBT_GOAL_S} s: {verdict(build_s < DBT_GOAL_S)}",
            )
        )
    rows.append(("load average before/after", f"{load_before}/{load_average()}", "2 cores"))
    print_table("summary (bench_publish)", rows)


if __name__ == "__main__":
    main()
