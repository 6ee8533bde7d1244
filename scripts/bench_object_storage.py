#!/usr/bin/env python
"""The archive on object storage with many workers (issue 14): backfill speed and memory.

    .venv/bin/python scripts/bench_object_storage.py [--days 30] [--meters 50] [--workers 1,2,4]
                                                     [--large-meters 500] [--skip-large]

A private influxd, luigid and S3-compatible server (moto in server mode, checking credentials),
on free loopback ports in a temporary folder removed at the end. Every command is a cold process
from the repository, timed from spawn to exit, its peak RSS from GNU time.

1. Backfill: `--meters` meters read every 10 s over `--days` local days (older than the
   late-data lookback). For each worker count N, N extraction workers (working folders of their
   own, `PIPELINE_HOLDS_WAREHOUSE=false`) run `RangeDaily --of ParquetDay` against one luigid
   into a fresh bucket: wall time from the first spawn to the last exit, readings/s, speed-up
   over one worker, peak RSS. The result is checked: every day extracted exactly once across
   the workers' run logs, and the manifests hold every reading. Then the warehouse worker loads
   the one-worker bucket (`RangeDaily --of DuckLoadDay`): readings/s read back from the store.
2. Many meters: `--large-meters` meters at 10 s for one day (500: 4.32 million readings):
   `ParquetDay` on an extraction worker and `DuckLoadDay` on the warehouse worker; the peak RSS
   of each, goal < 1 GiB.

The machine's cores are shared with influxd, moto and luigid, which serve every worker: the
speed-up is bounded by them, not only by the pipeline.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from dataclasses import dataclass
from datetime import date, timedelta
from pathlib import Path

import duckdb

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _bench import (
    LUIGI,
    CommandFailed,
    Run,
    days_ago,
    exit_cleanly_on_sigterm,
    influx_server,
    load_average,
    luigi_command,
    peak_rss_mib,
    pipeline_env,
    print_table,
    run_cold,
    seed_readings,
    spawn_timed,
    verdict,
)

from devstack.servers import InfluxServer, LuigidServer, MotoS3Server
from pipeline.publishing import sibling

INTERVAL = timedelta(seconds=10)
RSS_GOAL_MIB = 1024
TIMEOUT_S = 1800
# Luigi exits 4 ("were being run by another worker") when a task this worker scheduled was ever
# seen running on another one, e.g. the shared RangeDaily wrapper: the work is shared, not lost
# (every day is checked below).
SHARED_WORK_EXITS = (0, 4)


@dataclass(frozen=True)
class Stores:
    influx: InfluxServer
    s3: MotoS3Server


def env_for(stores: Stores, folder: Path, bucket: str, holds_warehouse: bool) -> dict[str, str]:
    """One machine's environment: its working folder, the shared bucket, luigid."""
    return {
        **pipeline_env(stores.influx, folder),
        **stores.s3.env(),
        "PARQUET_BASE_DIR": f"s3://{bucket}/archive",
        "PIPELINE_HOLDS_WAREHOUSE": str(holds_warehouse).lower(),
    }


def range_command(task: str, first: date, days: int, scheduler_url: str) -> list[str]:
    return [
        LUIGI,
        "--module",
        "pipeline",
        "RangeDaily",
        "--of",
        task,
        "--start",
        first.isoformat(),
        "--stop",
        (first + timedelta(days=days)).isoformat(),
        "--days-back",
        "5000",
        "--task-limit",
        str(4 * days + 10),
        "--scheduler-url",
        scheduler_url,
        "--worker-wait-jitter",
        "0.5",
        "--no-lock",  # N workers with one command line on one machine, on purpose
    ]


def run_together(commands: list[tuple[list[str], dict[str, str], Path]]) -> list[Run]:
    """Start every command at once, wait for all; each one's peak RSS, the common wall time."""
    started = time.perf_counter()
    running = []
    for cmd, env, log in commands:
        out = log.open("wb")
        peak = log.with_suffix(".maxrss")
        running.append((spawn_timed(cmd, env, out, peak), out, log, peak))
    for process, out, log, _ in running:
        try:
            process.wait(timeout=TIMEOUT_S)
        finally:
            out.close()
        if process.returncode not in SHARED_WORK_EXITS:
            tail = "\n".join(log.read_text(errors="replace").splitlines()[-15:])
            raise CommandFailed(f"{log.name} exited {process.returncode}:\n{tail}")
    elapsed = time.perf_counter() - started
    return [Run(elapsed, peak_rss_mib(peak)) for *_, peak in running]


def extracted_days(folders: list[Path]) -> list[date]:
    """ExtractDay successes across the workers' run logs (each in its own working folder)."""
    days = []
    for folder in folders:
        runs = sibling(folder / "duckdb" / "home_energy.duckdb", "runs")
        with duckdb.connect(str(runs), read_only=True) as con:
            days += [
                d
                for (d,) in con.execute(
                    "select date from pipeline_runs where task = 'ExtractDay' "
                    "and status = 'SUCCESS'"
                ).fetchall()
            ]
    return sorted(days)


def archived_rows(s3: MotoS3Server, bucket: str) -> int:
    """Readings the raw dataset's manifests hold."""
    client, total = s3.s3(), 0
    pages = client.get_paginator("list_objects_v2").paginate(
        Bucket=bucket, Prefix="archive/raw_meter_readings/"
    )
    for page in pages:
        for item in page.get("Contents", []):
            if item["Key"].endswith("/_manifest.json"):
                body = client.get_object(Bucket=bucket, Key=item["Key"])["Body"].read()
                total += json.loads(body)["rows"]
    return total


def backfill(stores: Stores, tmp: Path, first: date, days: int, workers: int) -> Run:
    bucket = f"backfill-{workers}-workers"
    stores.s3.create_bucket(bucket)
    folders = [tmp / f"{workers}-workers" / f"worker-{k}" for k in range(workers)]
    # A luigid of its own: one that marked a day DONE seconds ago would ignore its new claim.
    with LuigidServer(tmp / f"{workers}-workers" / "luigid") as luigid:
        commands = []
        for folder in folders:
            folder.mkdir(parents=True)
            env = env_for(stores, folder, bucket, holds_warehouse=False)
            cmd = range_command("ParquetDay", first, days, luigid.url)
            commands.append((cmd, env, folder / "worker.log"))
        runs = run_together(commands)
    expected = [first + timedelta(days=n) for n in range(days)]
    if extracted_days(folders) != expected:
        raise CommandFailed(f"{workers} workers: days not extracted exactly once")
    return Run(runs[0].seconds, max(r.peak_rss_mib for r in runs))


def bench_backfill(stores: Stores, tmp: Path, args: argparse.Namespace) -> list[tuple]:
    first = days_ago(args.days + 10)
    sources = [f"meter{n}" for n in range(1, args.meters + 1)]
    readings, seconds = seed_readings(stores.influx, first, args.days, INTERVAL, sources)
    print(
        f"seeded {readings:,} readings ({args.meters} meters, {args.days} days) in {seconds:.0f} s"
    )
    rows = [("seeding influxd", f"{seconds:.1f} s", f"{readings:,} readings")]
    rates = {}
    for workers in args.workers:
        run = backfill(stores, tmp, first, args.days, workers)
        if archived_rows(stores.s3, f"backfill-{workers}-workers") != readings:
            raise CommandFailed(f"{workers} workers: the manifests do not hold every reading")
        rates[workers] = readings / run.seconds
        speedup = rates[workers] / rates[args.workers[0]]
        print(
            f"{workers} extraction worker(s): {run.seconds:.1f} s, {rates[workers]:,.0f} "
            f"readings/s, speed-up {speedup:.2f}x, peak RSS {run.peak_rss_mib:.0f} MiB"
        )
        rows.append(
            (
                f"backfill to S3, {workers} worker(s)",
                f"{run.seconds:.1f} s",
                f"{rates[workers]:,.0f} readings/s, x{speedup:.2f}, "
                f"peak RSS {run.peak_rss_mib:.0f} MiB",
            )
        )
    bucket = f"backfill-{args.workers[0]}-workers"
    env = env_for(stores, tmp / "warehouse", bucket, holds_warehouse=True)
    with LuigidServer(tmp / "warehouse-luigid") as luigid:
        cmd = range_command("DuckLoadDay", first, args.days, luigid.url)
        load = run_cold(cmd, env, tmp / "warehouse.log", TIMEOUT_S)
    print(
        f"warehouse load from S3: {load.seconds:.1f} s, {readings / load.seconds:,.0f} readings/s"
    )
    rows.append(
        (
            "DuckDB load from S3 (warehouse)",
            f"{load.seconds:.1f} s",
            f"{readings / load.seconds:,.0f} readings/s, peak RSS {load.peak_rss_mib:.0f} MiB",
        )
    )
    return rows


def bench_many_meters(stores: Stores, tmp: Path, args: argparse.Namespace) -> list[tuple]:
    day = days_ago(args.days + 12)  # before the backfill's days
    sources = [f"meter{n}" for n in range(1, args.large_meters + 1)]
    readings, seconds = seed_readings(stores.influx, day, 1, INTERVAL, sources)
    print(f"seeded {readings:,} readings ({args.large_meters} meters, {day}) in {seconds:.0f} s")
    bucket = "many-meters"
    stores.s3.create_bucket(bucket)
    extractor = env_for(stores, tmp / "many-extractor", bucket, holds_warehouse=False)
    warehouse = env_for(stores, tmp / "many-warehouse", bucket, holds_warehouse=True)
    rows = []
    for role, task, env in (
        ("extraction worker", "ParquetDay", extractor),
        ("warehouse worker", "DuckLoadDay", warehouse),
    ):
        log = tmp / f"many-{task}.log"
        run = run_cold(luigi_command(task, "--date", day.isoformat()), env, log, TIMEOUT_S)
        ok = verdict(run.peak_rss_mib < RSS_GOAL_MIB)
        print(
            f"{args.large_meters} meters, {role} ({task}): {run.seconds:.1f} s, "
            f"peak RSS {run.peak_rss_mib:.0f} MiB (goal < {RSS_GOAL_MIB}): {ok}"
        )
        rows.append(
            (
                f"{args.large_meters} meters, {role} ({task})",
                f"{run.peak_rss_mib:.0f} MiB",
                f"{run.seconds:.1f} s; goal < {RSS_GOAL_MIB} MiB: {ok}",
            )
        )
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--days", type=int, default=30, help="days of the backfill")
    parser.add_argument("--meters", type=int, default=50, help="meters in the backfill")
    parser.add_argument(
        "--workers",
        type=lambda s: [int(n) for n in s.split(",")],
        default=[1, 2, 4],
        help="extraction worker counts to compare, comma-separated (the first is the baseline)",
    )
    parser.add_argument("--large-meters", type=int, default=500, help="meters of the large day")
    parser.add_argument("--skip-large", action="store_true", help="leave out the large day")
    args = parser.parse_args()
    exit_cleanly_on_sigterm()
    load_before = load_average()
    with tempfile.TemporaryDirectory(prefix="bench-object-storage-") as name:
        tmp = Path(name)
        with influx_server(tmp) as influx, MotoS3Server(tmp / "moto") as s3:
            stores = Stores(influx, s3)
            rows = bench_backfill(stores, tmp, args)
            if not args.skip_large:
                rows += bench_many_meters(stores, tmp, args)
    rows.append(
        ("load average before/after", f"{load_before}/{load_average()}", f"{os.cpu_count()} cores")
    )
    print_table("summary (bench_object_storage)", [("measure", "figure", "note"), *rows])


if __name__ == "__main__":
    main()
