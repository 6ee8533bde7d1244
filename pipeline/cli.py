"""Operator commands: `status` of recent days, `check` the paths and servers, `rebuild` days."""

from __future__ import annotations

import argparse
import shutil
import sys
from collections.abc import Callable
from datetime import date, timedelta

import duckdb

from pipeline.config import calendar, influx, storage
from pipeline.database import connect, has_table
from pipeline.days import local_today
from pipeline.errors import PipelineError, damage_explained
from pipeline.extract import InfluxSource
from pipeline.forecast_task import forecast_states
from pipeline.partitions import PartitionTarget, check_writable
from pipeline.publishing import Warehouse
from pipeline.runlog import last_runs
from pipeline.schema import MARKER_TABLE
from pipeline.task_base import (
    LANDING_DATASET,
    RAW_DATASET,
    dataset_dir,
    live_warehouse,
    warehouse_file,
)
from pipeline.tasks import DbtBuild
from pipeline.warehouse import verify


def rebuild(first: date, last: date, accept_fewer: bool = False) -> list[date]:
    """Flag the landing partitions of [first, last] so the next run extracts them again.

    The new extraction replaces each day whole, and the fingerprints make every stage after it
    rebuild that day. Until then the archived partition stays in place, so a failed
    re-extraction (InfluxDB down, data past its retention) loses nothing, and an extraction
    with fewer readings than the archive is refused unless `accept_fewer`.
    """
    return [
        day
        for day in _days(first, last)
        if PartitionTarget(dataset_dir(LANDING_DATASET), day).request_rebuild(accept_fewer)
    ]


def _days(first: date, last: date) -> list[date]:
    return [first + timedelta(days=n) for n in range((last - first).days + 1)]


def _cmd_rebuild(args: argparse.Namespace) -> int:
    first, last = args.date, args.to or args.date
    if args.cancel:
        landing = dataset_dir(LANDING_DATASET)
        for day in _days(first, last):
            if PartitionTarget(landing, day).cancel_rebuild():
                print(f"{day}: rebuild cancelled, the archive stays as it is")
        return 0
    flagged = rebuild(first, last, accept_fewer=args.accept_fewer)
    for day in flagged:
        print(f"{day}: flagged for rebuild" + (" (fewer readings accepted)" * args.accept_fewer))
    if not flagged:
        print("no archived day in that range; the next run extracts missing days anyway")
    return 0


def _cmd_restore_prev(args: argparse.Namespace) -> int:
    warehouse = live_warehouse()
    aside = warehouse.restore_prev()
    print(f"{warehouse.live} restored from {warehouse.prev_path.name}")
    if aside:
        print(f"the damaged file was moved to {aside}")
    print("the next run loads again the days the restored copy does not hold")
    return 0


def _manifest_rows(dataset: str, days: list[date]) -> dict[date, str]:
    found = dataset_dir(dataset).current_days()
    rows = {}
    for day in days:
        target = PartitionTarget(dataset_dir(dataset), day)
        if day in found:
            rows[day] = f"{target.manifest().get('rows', '?'):,}"
        elif target.archived():
            rows[day] = "rebuild"
    return rows


# Per-day figures of the marts for `status`: (column, table, query over ? and ?, format).
_MART_COLUMNS = (
    (
        "coverage",
        "fct_daily_energy",
        "select date_jst, avg(coverage_ratio) from fct_daily_energy "
        "where date_jst between ? and ? group by date_jst",
        "{:.1%}",
    ),
    (
        "cost",
        "fct_daily_cost",
        "select date_jst, sum(cost_yen) from fct_daily_cost "
        "where date_jst between ? and ? group by date_jst",
        "¥{:,.0f}",
    ),
    (
        "findings",
        "fct_energy_findings",
        "select date_jst, count(*) from fct_energy_findings "
        "where date_jst between ? and ? group by date_jst",
        "{:d}",
    ),
)


def _warehouse_view(days: list[date]) -> dict[str, dict[date, str]]:
    """Per column, per day: rows loaded (from the markers) and the marts' daily figures."""
    live = warehouse_file()
    if not live.exists():
        return {}
    window = [days[0], days[-1]]
    with connect(live, read_only=True) as con, damage_explained(live):
        loaded = con.execute(
            f"select partition_date, row_count from {MARKER_TABLE} "
            "where target_table = 'raw_meter_readings' and partition_date between ? and ?",
            window,
        ).fetchall()
        view = {"duckdb": {d: f"{n:,}" for d, n in loaded}}
        for column, table, sql, fmt in _MART_COLUMNS:
            rows = con.execute(sql, window).fetchall() if has_table(con, table) else []
            view[column] = {d: fmt.format(v) for d, v in rows if v is not None}
    return view


def _cmd_status(args: argparse.Namespace) -> int:
    yesterday = local_today(calendar().zone) - timedelta(days=1)
    days = [yesterday - timedelta(days=n) for n in range(args.days - 1, -1, -1)]
    landing, raw = _manifest_rows(LANDING_DATASET, days), _manifest_rows(RAW_DATASET, days)
    try:
        view = _warehouse_view(days)
        built = set(DbtBuild.bulk_complete(iter(days)))
        forecasts = forecast_states(days)
    except PipelineError as e:
        print(f"DuckDB: {e}")
        view, built, forecasts = {}, set(), {}
    runs = last_runs(days)
    header = (
        "date", "landing", "parquet", "duckdb", "dbt", "forecast", "coverage", "cost",
        "findings", "last run",
    )  # fmt: skip
    row = "{:<10}  {:>9}  {:>9}  {:>9}  {:>4}  {:>8}  {:>8}  {:>8}  {:>8}  {}"
    print(row.format(*header))
    for day in days:
        run = runs.get(day)
        last = f"{run[0]} {run[1]}" + (f": {run[3]}" if run and run[3] else "") if run else ""
        marts = [view.get(column, {}).get(day, "-") for column, *_ in _MART_COLUMNS]
        print(
            row.format(
                str(day),
                landing.get(day, "-"),
                raw.get(day, "-"),
                view.get("duckdb", {}).get(day, "-"),
                "ok" if day in built else "-",
                forecasts.get(day, "-"),
                *marts,
                last,
            )
        )
    return 0


def _check_influx() -> str:
    settings = influx().settings()
    fields = InfluxSource(settings).preflight()
    return f"{settings.url} database {settings.database!r}: fields {sorted(fields) or 'none yet'}"


def _check_parquet() -> str:
    return dataset_dir(LANDING_DATASET).probe()


def _check_duckdb() -> str:
    if not storage().holds_warehouse:
        return "not on this worker (PIPELINE_HOLDS_WAREHOUSE=false): it extracts and archives"
    warehouse = live_warehouse()
    live = warehouse.live
    detail = check_writable(live.parent)
    with Warehouse(live, warehouse.mode).writer_lock():
        pass
    if live.exists():
        with connect(live, read_only=True) as con, damage_explained(live):
            verify(con)
        detail += f"; {live.name} reads whole ({live.stat().st_size / 2**20:.1f} MiB)"
    needed, free = warehouse.room_needed(), shutil.disk_usage(live.parent).free
    if free < needed:
        raise PipelineError(
            f"{detail}, but a publish needs {needed / 2**20:.0f} MiB free and "
            f"{free / 2**20:.0f} MiB are"
        )
    return detail + f"; writer lock free; mode {warehouse.mode}"


CHECKS: dict[str, Callable[[], str]] = {
    "InfluxDB": _check_influx,
    "Parquet": _check_parquet,
    "DuckDB": _check_duckdb,
}


def _cmd_check(args: argparse.Namespace) -> int:
    failed = 0
    for name, probe in CHECKS.items():
        try:
            print(f"ok    {name}: {probe()}")
        except (Exception, duckdb.Error) as e:
            failed += 1
            print(f"FAIL  {name}: {e}")
    return 1 if failed else 0


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m pipeline")
    sub = p.add_subparsers(dest="command", required=True)
    st = sub.add_parser("status", help="per day: which stages are complete, rows, coverage, runs")
    st.add_argument("--days", type=int, default=30, help="how many days up to yesterday")
    st.set_defaults(run=_cmd_status)
    ck = sub.add_parser("check", help="verify InfluxDB, Parquet and DuckDB are usable")
    ck.set_defaults(run=_cmd_check)
    r = sub.add_parser("rebuild", help="force archived days to be extracted and loaded again")
    r.add_argument("--date", type=date.fromisoformat, required=True, help="first day, YYYY-MM-DD")
    r.add_argument("--to", type=date.fromisoformat, help="last day, inclusive (default --date)")
    r.add_argument(
        "--accept-fewer",
        action="store_true",
        help="let the new extraction replace the archive even with fewer readings",
    )
    r.add_argument(
        "--cancel", action="store_true", help="withdraw a rebuild request; keep the archive"
    )
    r.set_defaults(run=_cmd_rebuild)
    rp = sub.add_parser(
        "restore-prev", help="replace a damaged DuckDB file with the copy kept before the publish"
    )
    rp.set_defaults(run=_cmd_restore_prev)
    return p


def main(argv: list[str] | None = None) -> int:
    args = parser().parse_args(argv)
    try:
        return args.run(args)
    except PipelineError as e:
        print(f"error: {e}", file=sys.stderr)
        return 1
