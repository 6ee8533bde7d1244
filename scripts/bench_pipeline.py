#!/usr/bin/env python
"""Pipeline speed and memory (issue 2): DuckLoadDay from cold processes against a private influxd.

    .venv/bin/python scripts/bench_pipeline.py [--skip-large] [--repeat 3] [--day YYYY-MM-DD]

1. One meter at 1 Hz for one day (86,400 readings): the `luigi --module pipeline DuckLoadDay`
   command versus a minimal script doing the same three steps with the same libraries and no
   Luigi (InfluxDB CSV in the same hourly windows -> Arrow -> Parquet -> DuckDB insert from
   read_parquet), each a cold process with a fresh Parquet folder and DuckDB file, median of
   `--repeat`. Goal: luigi <= 1.5 x minimal.
2. 100 meters at 1 Hz for one day (8.64 million readings): the same luigi command once; wall
   time, readings/s and peak RSS. Goal: peak RSS < 1 GiB. Then, to show where time and memory
   go, the minimal script and each stage (ExtractDay, ParquetDay, DuckLoadDay) as its own cold
   command. `--skip-large` leaves all of part 2 out.
The machine's load average is printed too: other work on it slows every figure.
"""

from __future__ import annotations

import argparse
import configparser
import sys
import tempfile
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from zoneinfo import ZoneInfo

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _bench import (
    PYTHON,
    REPO,
    TZ,
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
from pipeline.days import day_window_utc

RATIO_GOAL = 1.5
RSS_GOAL_MIB = 1024
SMALL_TIMEOUT_S = 300
LARGE_TIMEOUT_S = 3600
EPOCH = datetime(1970, 1, 1, tzinfo=UTC)

# The same three steps as ExtractDay -> ParquetDay -> DuckLoadDay, as plainly as they can be
# written. argv: influx url, database, measurement, start ns, end ns, window ns, parquet file,
# duckdb file, time zone.
MINIMAL_SCRIPT = """
import io, sys
import duckdb, pyarrow as pa, pyarrow.csv as pacsv, pyarrow.parquet as pq, requests

url, db, measurement, start, end, step, parquet, duck, tz = sys.argv[1:]
start, end, step = int(start), int(end), int(step)
fields = ["instant_power_w", "energy_import_kwh", "energy_export_kwh"]
types = {"time": pa.int64(), "source": pa.string(), **dict.fromkeys(fields, pa.float64())}
schema = pa.schema([("time", pa.timestamp("ms", tz="UTC")), ("source", pa.string()),
                    *((f, pa.float64()) for f in fields)])
session = requests.Session()
with pq.ParquetWriter(parquet, schema, compression="zstd") as writer:
    for lo in range(start, end, step):
        q = (f'SELECT {", ".join(fields)}, "source" FROM "{measurement}" '
             f"WHERE time >= {lo} AND time < {min(lo + step, end)}")
        answer = session.post(f"{url}/query", params={"q": q, "db": db, "epoch": "ms"},
                              headers={"Accept": "application/csv"}, timeout=30)
        answer.raise_for_status()
        if not answer.content.strip():
            continue
        table = pacsv.read_csv(io.BytesIO(answer.content), convert_options=pacsv.ConvertOptions(
            column_types=types, include_columns=list(types), include_missing_columns=True))
        writer.write_table(table.cast(schema))
with duckdb.connect(duck) as con:
    con.execute(
        "create table raw_meter_readings as select time as ts_utc, timezone(?, time) as ts_jst,"
        " source, instant_power_w, energy_import_kwh, energy_export_kwh, now() as ingested_at"
        " from read_parquet(?) order by source, ts_utc", [tz, parquet])
    rows = con.execute("select count(*) from raw_meter_readings").fetchone()[0]
print(rows, "rows")
"""


def run_luigi(influx: InfluxServer, workdir: Path, task: str, day: date, timeout_s: float) -> Run:
    """`luigi --module pipeline <task> --date <day>` with the installation in `workdir`."""
    workdir.mkdir(parents=True, exist_ok=True)
    return run_cold(
        luigi_command(task, "--date", day.isoformat()),
        pipeline_env(influx, workdir),
        workdir / f"{task}.log",
        timeout_s,
    )


def run_minimal(influx: InfluxServer, workdir: Path, day: date, timeout_s: float) -> Run:
    workdir.mkdir(parents=True)
    start, end = day_window_utc(day, ZoneInfo(TZ))
    args = [
        influx.url,
        "home_energy",
        "power",
        str(_ns(start - EPOCH)),
        str(_ns(end - EPOCH)),
        str(_ns(timedelta(minutes=window_minutes()))),
        str(workdir / "day.parquet"),
        str(workdir / "minimal.duckdb"),
        TZ,
    ]
    return run_cold(
        [PYTHON, "-c", MINIMAL_SCRIPT, *args],
        pipeline_env(influx, workdir),
        workdir / "minimal.log",
        timeout_s,
    )


def window_minutes() -> int:
    """luigi.cfg's [influx] window_minutes (the benchmark's environment does not override it),
    so the minimal script queries the same windows as ExtractDay."""
    config = configparser.ConfigParser()
    config.read(REPO / "luigi.cfg")
    return config.getint("influx", "window_minutes")


def _ns(span: timedelta) -> int:
    return int(span.total_seconds()) * 1_000_000_000


def bench_one_meter(tmp: Path, day: date, repeat: int) -> list[Row]:
    """Luigi vs minimal for 86,400 readings, interleaved so drift in the machine hits both."""
    with influx_server(tmp) as influx:
        readings, seconds = seed_readings(influx, day, 1, timedelta(seconds=1), ["meter1"])
        print(f"seeded {readings:,} readings (1 meter, 1 Hz, {day}) in {seconds:.1f} s")
        luigi_runs, minimal_runs = [], []
        for n in range(repeat):
            luigi_runs.append(
                run_luigi(influx, tmp / f"luigi-{n}", "DuckLoadDay", day, SMALL_TIMEOUT_S)
            )
            minimal_runs.append(run_minimal(influx, tmp / f"minimal-{n}", day, SMALL_TIMEOUT_S))
            print(
                f"  run {n + 1}: luigi {luigi_runs[-1].seconds:.2f} s, "
                f"minimal {minimal_runs[-1].seconds:.2f} s"
            )
    luigi_s = median([r.seconds for r in luigi_runs])
    minimal_s = median([r.seconds for r in minimal_runs])
    ratio = luigi_s / minimal_s
    # Noise on a shared machine only ever adds time, so the best runs are shown beside.
    best_ratio = min(r.seconds for r in luigi_runs) / min(r.seconds for r in minimal_runs)
    ok = verdict(ratio <= RATIO_GOAL)
    print(
        f"1 meter: luigi DuckLoadDay {luigi_s:.2f} s, minimal script {minimal_s:.2f} s "
        f"(medians of {repeat}); ratio {ratio:.2f} (goal <= {RATIO_GOAL}): {ok}; "
        f"ratio of the best runs {best_ratio:.2f}"
    )
    return [
        ("1 meter, luigi DuckLoadDay", f"{luigi_s:.2f} s", f"median of {repeat}, cold"),
        ("1 meter, minimal script", f"{minimal_s:.2f} s", f"median of {repeat}, cold"),
        ("1 meter, ratio luigi/minimal", f"{ratio:.2f}", f"goal <= {RATIO_GOAL}: {ok}"),
        ("1 meter, ratio of the best runs", f"{best_ratio:.2f}", ""),
        (
            "1 meter, peak RSS luigi/minimal",
            f"{max(r.peak_rss_mib for r in luigi_runs):.0f}/"
            f"{max(r.peak_rss_mib for r in minimal_runs):.0f} MiB",
            "",
        ),
    ]


def bench_hundred_meters(tmp: Path, day: date) -> list[Row]:
    """The luigi command on 8.64 million readings; then the minimal script, and each stage as
    its own command, to show where the time and the memory go."""
    sources = [f"meter{n}" for n in range(1, 101)]
    with influx_server(tmp) as influx:
        readings, seconds = seed_readings(influx, day, 1, timedelta(seconds=1), sources)
        print(
            f"seeded {readings:,} readings (100 meters, 1 Hz, {day}) in {seconds:.1f} s "
            f"({readings / seconds:,.0f} readings/s into influxd)"
        )
        chain = run_luigi(influx, tmp / "luigi", "DuckLoadDay", day, LARGE_TIMEOUT_S)
        ok = verdict(chain.peak_rss_mib < RSS_GOAL_MIB)
        print(
            f"100 meters: luigi DuckLoadDay {chain.seconds:.1f} s, "
            f"{readings / chain.seconds:,.0f} readings/s, peak RSS {chain.peak_rss_mib:.0f} MiB "
            f"(goal < {RSS_GOAL_MIB} MiB): {ok}"
        )
        minimal = run_minimal(influx, tmp / "minimal", day, LARGE_TIMEOUT_S)
        print(f"  minimal script {minimal.seconds:.1f} s, peak RSS {minimal.peak_rss_mib:.0f} MiB")
        stages = {
            task: run_luigi(influx, tmp / "stages", task, day, LARGE_TIMEOUT_S)
            for task in ("ExtractDay", "ParquetDay", "DuckLoadDay")
        }
    rows = [
        ("100 meters, seeding influxd", f"{seconds:.1f} s", f"{readings:,} readings"),
        (
            "100 meters, luigi DuckLoadDay",
            f"{chain.seconds:.1f} s",
            f"{readings / chain.seconds:,.0f} readings/s",
        ),
        (
            "100 meters, peak RSS luigi",
            f"{chain.peak_rss_mib:.0f} MiB",
            f"goal < {RSS_GOAL_MIB} MiB: {ok}",
        ),
        (
            "100 meters, minimal script",
            f"{minimal.seconds:.1f} s",
            f"peak RSS {minimal.peak_rss_mib:.0f} MiB",
        ),
    ]
    for task, run in stages.items():
        rows.append(
            (
                f"100 meters, {task} alone",
                f"{run.seconds:.1f} s",
                f"peak RSS {run.peak_rss_mib:.0f} MiB",
            )
        )
        print(f"  {task} alone: {run.seconds:.1f} s, peak RSS {run.peak_rss_mib:.0f} MiB")
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--skip-large", action="store_true", help="leave out the 100-meter day")
    parser.add_argument("--repeat", type=int, default=3, help="cold runs of each command")
    parser.add_argument(
        "--day",
        type=date.fromisoformat,
        default=days_ago(30),
        help="local day to seed and load (default: 30 days ago, outside the late-data lookback)",
    )
    args = parser.parse_args()
    exit_cleanly_on_sigterm()
    load_before = load_average()
    with tempfile.TemporaryDirectory(prefix="bench-pipeline-") as tmp:
        rows = bench_one_meter(Path(tmp) / "one-meter", args.day, args.repeat)
        if not args.skip_large:
            rows += bench_hundred_meters(Path(tmp) / "hundred-meters", args.day)
    rows.append(("load average before/after", f"{load_before}/{load_average()}", "2 cores"))
    print_table("summary (bench_pipeline)", [("measure", "figure", "note"), *rows])


if __name__ == "__main__":
    main()
