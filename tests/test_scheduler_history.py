"""luigid's batched task history (scheduler/): the rows Luigi's own history writes, written a
second at a time, kept through a database error and through a SIGTERM."""

from __future__ import annotations

import sqlite3
import time
import urllib.request
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

import luigi.configuration
from conftest import hourly_lines, recent_days
from luigi.db_task_history import Base, DbTaskHistory
from luigi.scheduler import Task
from luigi.task_status import PENDING

from scheduler.__main__ import parse_args
from scheduler.history import BatchedTaskHistory

ROWS = """
select t.task_id, t.name, t.host, e.event_name,
       (select group_concat(p.name || '=' || p.value) from task_parameters p where p.task_id = t.id)
from task_events e join tasks t on t.id = e.task_id
order by e.id
"""


@contextmanager
def history_database(path: Path) -> Iterator[str]:
    """[task_history] db_connection pointed at a new SQLite file while in use."""
    config = luigi.configuration.get_config()
    url = f"sqlite:///{path}"
    config.set("task_history", "db_connection", url)
    try:
        yield url
    finally:
        config.remove_option("task_history", "db_connection")


def rows(path: Path) -> list[tuple]:
    with sqlite3.connect(path) as con:
        return con.execute(ROWS).fetchall()


def scheduler_task(day: str) -> Task:
    return Task(f"ExtractDay_{day}", PENDING, deps=None, family="ExtractDay", params={"date": day})


def play(history: DbTaskHistory, after_three: Callable[[int], None] = lambda _: None) -> None:
    """What luigid tells its history about two days, one done and one failed; `after_three`
    is called with the number of events told so far after every third."""
    first, second = scheduler_task("2025-01-01"), scheduler_task("2025-01-02")
    history.task_scheduled(first)
    history.task_scheduled(second)
    history.task_started(first, "host-a")
    after_three(3)
    history.task_finished(first, successful=True)
    history.task_started(second, "host-b")
    history.task_finished(second, successful=False)
    after_three(6)


def test_writes_the_rows_luigis_history_writes(tmp_path: Path) -> None:
    with history_database(tmp_path / "luigi.db"):
        play(DbTaskHistory())
    with history_database(tmp_path / "batched.db"):
        batched = BatchedTaskHistory()

        def write(told: int) -> None:
            assert len(rows(tmp_path / "batched.db")) == told - 3  # queued, not written yet
            batched.write_queued()
            assert len(rows(tmp_path / "batched.db")) == told

        play(batched, write)

    expected = rows(tmp_path / "luigi.db")
    events = ["PENDING", "PENDING", "RUNNING", "DONE", "RUNNING", "FAILED"]
    assert [r[3] for r in expected] == events
    assert rows(tmp_path / "batched.db") == expected
    # luigid's History pages query through DbTaskHistory: they find the batched rows.
    with history_database(tmp_path / "batched.db"):
        found = {
            record.parameters["date"].value: (record.host, [e.event_name for e in record.events])
            for record in DbTaskHistory().find_all_by_name("ExtractDay")
        }
    assert found == {
        "2025-01-01": ("host-a", ["DONE", "RUNNING", "PENDING"]),
        "2025-01-02": ("host-b", ["FAILED", "RUNNING", "PENDING"]),
    }


def test_a_database_error_keeps_the_events_for_the_next_write(tmp_path: Path) -> None:
    with history_database(tmp_path / "batched.db"):
        history = BatchedTaskHistory()
        history.task_scheduled(scheduler_task("2025-01-01"))
        Base.metadata.drop_all(history.engine)  # the database lost its tables

        history.write_queued()  # logged; the event stays queued
        Base.metadata.create_all(history.engine)
        history.task_started(scheduler_task("2025-01-01"), "host-a")
        history.write_queued()
    assert [r[3] for r in rows(tmp_path / "batched.db")] == ["PENDING", "RUNNING"]


def test_luigid_records_every_run_and_keeps_it_when_stopped(pipeline_env, luigid) -> None:
    [day] = recent_days(1)
    pipeline_env.write(hourly_lines(day))
    result = pipeline_env.cli(
        "RangeDaily", "--of", "DuckLoadDay", "--days-back", "1", "--scheduler-url", luigid.url
    )
    assert result.returncode == 0, result.stderr
    luigid.stop()  # SIGTERM, at once: the last second's events are still queued

    events = rows(luigid.workdir / "luigi-task-history.db")
    for family in ("ExtractDay", "ParquetDay", "DuckLoadDay"):
        assert [e[3] for e in events if e[1] == family] == ["PENDING", "RUNNING", "DONE"]
        assert any(e[4] == f"date={day}" for e in events if e[1] == family)


def test_the_history_page_shows_the_runs(pipeline_env, luigid) -> None:
    [day] = recent_days(1)
    pipeline_env.write(hourly_lines(day))
    command = ("ExtractDay", "--date", str(day), "--scheduler-url", luigid.url)
    assert pipeline_env.cli(*command).returncode == 0
    deadline = time.monotonic() + 10  # written within a second
    while "ExtractDay" not in page(f"{luigid.url}/history") and time.monotonic() < deadline:
        time.sleep(0.2)
    assert str(day) in page(f"{luigid.url}/history/by_name/ExtractDay")


def page(url: str) -> str:
    with urllib.request.urlopen(url, timeout=10) as answer:
        return answer.read().decode()


def test_luigid_listens_on_loopback_unless_told_otherwise() -> None:
    assert parse_args([]).address == "127.0.0.1"
    assert parse_args(["--address", "0.0.0.0"]).address == "0.0.0.0"
