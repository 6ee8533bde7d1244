"""The run log: a `pipeline_runs` row per task and day, written by Luigi event handlers.

It lives in its own DuckDB file beside the warehouse (`home_energy.runs.duckdb`): a failed run
publishes nothing, and the log must not wait for, or be swapped away by, a publish. Writes are
short and retried while another worker holds the file.
"""

from __future__ import annotations

import logging
import os
import time
from datetime import date
from pathlib import Path

import duckdb
import luigi

from pipeline.config import storage
from pipeline.publishing import sibling
from pipeline.task_base import PipelineTask

logger = logging.getLogger("luigi-interface")

RUNS_SQL = """
create table if not exists pipeline_runs (
    task varchar not null,
    date date not null,
    status varchar not null,
    rows bigint,
    duration_s double,
    error varchar,
    finished_at timestamptz not null default now(),
    pid integer
)
"""


def runs_path() -> Path:
    return sibling(storage().duckdb_file, "runs")


def record(task: PipelineTask, status: str, error: str | None = None) -> None:
    started = getattr(task, "_started_at", None)
    duration = time.monotonic() - started if started is not None else None
    rows = [
        (task.get_task_family(), day, status, task.rows_written, duration, error, os.getpid())
        for day in task.days()
    ]
    path = runs_path()
    path.parent.mkdir(parents=True, exist_ok=True)
    deadline = time.monotonic() + 15
    while True:
        try:
            with duckdb.connect(str(path)) as con:
                con.execute(RUNS_SQL)
                con.executemany(
                    "insert into pipeline_runs (task, date, status, rows, duration_s, error, pid)"
                    " values (?, ?, ?, ?, ?, ?, ?)",
                    rows,
                )
            return
        except duckdb.IOException:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.1)


def last_runs(days: list[date]) -> dict[date, tuple]:
    """Per day, the latest run, its columns all from that one row: (task, status, rows, error)."""
    path = runs_path()
    if not path.exists() or not days:
        return {}
    with duckdb.connect(str(path), read_only=True) as con:
        rows = con.execute(
            "select date, task, status, rows, error from pipeline_runs "
            "where date between ? and ? "
            "qualify row_number() over (partition by date order by finished_at desc) = 1",
            [min(days), max(days)],
        ).fetchall()
    return {r[0]: r[1:] for r in rows}


@PipelineTask.event_handler(luigi.Event.START)
def _started(task: PipelineTask) -> None:
    task._started_at = time.monotonic()


@PipelineTask.event_handler(luigi.Event.SUCCESS)
def _succeeded(task: PipelineTask) -> None:
    record(task, "SUCCESS")


@PipelineTask.event_handler(luigi.Event.FAILURE)
def _failed(task: PipelineTask, exception: BaseException) -> None:
    message = str(exception).strip().splitlines()
    record(task, "FAILED", f"{type(exception).__name__}: {message[0] if message else ''}")
