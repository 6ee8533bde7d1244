"""The run log: a `pipeline_runs` row per task and day, written by Luigi event handlers.

It lives in its own DuckDB file beside the warehouse (`home_energy.runs.duckdb`): a failed run
publishes nothing, and the log must not wait for, or be swapped away by, a publish. Writes are
short and retried while another worker holds the file.

Opening the file and committing costs tens of milliseconds (two fsyncs), as much as a small
day's work: successes are written at most every FLUSH_EVERY_S seconds and when the process
exits, so a backfill of many days writes the log a few times, not once per task. Failures,
and tasks run in a worker's child process (which exits without running `atexit`), are written
at once.
"""

from __future__ import annotations

import atexit
import logging
import multiprocessing
import os
import time
from datetime import UTC, date, datetime
from pathlib import Path

import duckdb
import luigi

from pipeline.config import storage
from pipeline.database import insert_values
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


FLUSH_EVERY_S = 5.0
# Rows not yet written, per run-log file; when they were last written.
_pending: dict[Path, list[tuple]] = {}
_last_flush = time.monotonic()  # a short run writes its log once, when it exits


def runs_path() -> Path:
    return sibling(storage().duckdb_file, "runs")


def record(task: PipelineTask, status: str, error: str | None = None) -> None:
    started = task._started_at
    duration = time.monotonic() - started if started is not None else None
    finished = datetime.now(UTC)
    _pending.setdefault(runs_path(), []).extend(
        (
            task.get_task_family(),
            d,
            status,
            task.rows_written,
            duration,
            error,
            finished,
            os.getpid(),
        )
        for d in task.days()
    )
    in_child = multiprocessing.parent_process() is not None
    if status != "SUCCESS" or in_child or time.monotonic() - _last_flush >= FLUSH_EVERY_S:
        flush()


@atexit.register
def flush() -> None:
    """Write every pending row."""
    global _last_flush
    _last_flush = time.monotonic()
    while _pending:
        path, rows = _pending.popitem()
        _write(path, rows)


def _write(path: Path, rows: list[tuple]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    deadline = time.monotonic() + 15
    while True:
        try:
            with duckdb.connect(str(path)) as con:
                con.execute(RUNS_SQL)
                insert_values(
                    con,
                    "insert into pipeline_runs "
                    "(task, date, status, rows, duration_s, error, finished_at, pid) values",
                    "(?, ?, ?, ?, ?, ?, ?, ?)",
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
