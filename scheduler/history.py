"""luigid's task history, written a second at a time instead of an event at a time.

Luigi's DbTaskHistory records every event of every task (scheduled, running, done, failed) in a
SQLAlchemy session of its own: it loads the task's record, appends the event and commits, 3 to
4 ms on a small machine. luigid answers one request at a time and the worker waits for each
answer: a year's backfill (1,095 tasks scheduled, 391 runs) took 34.8 s through luigid with it
and takes 29.3 s with this one (`scripts/bench_backfill.py`).

`BatchedTaskHistory` queues the events instead, and `write_queued` writes them into the same
tables in one transaction: luigid calls it every second and when it stops. The History pages
read the tables through DbTaskHistory's own queries, so they show the same runs, at most a
second later. A luigid killed with kill -9 loses that last second of history, with the task
states it only saves when it stops.
"""

from __future__ import annotations

import logging

from luigi.db_task_history import DbTaskHistory, TaskEvent, TaskParameter, TaskRecord
from luigi.task_history import StoredTask
from sqlalchemy import insert, update
from sqlalchemy.engine import Connection
from sqlalchemy.exc import SQLAlchemyError

logger = logging.getLogger("luigi.server")

WRITE_EVERY_S = 1.0


class BatchedTaskHistory(DbTaskHistory):
    """DbTaskHistory's tables and queries; its events written by `write_queued`."""

    def __init__(self) -> None:
        super().__init__()  # reads [task_history] db_connection, creates the tables
        self._queued: list[tuple[StoredTask, TaskEvent, str | None]] = []

    def _add_task_event(self, task: StoredTask, event: TaskEvent) -> None:
        # DbTaskHistory's task_scheduled/started/finished end here; the host is the event's.
        self._queued.append((task, event, task.host))

    def write_queued(self) -> None:
        """Write the queued events in one transaction; on a database error keep them queued
        for the next call (the scheduler goes on either way)."""
        queued, self._queued = self._queued, []
        created: dict[StoredTask, int] = {}  # records inserted, known once committed
        try:
            with self.engine.begin() as connection:
                for task, event, host in queued:
                    record_id = task.record_id or created.get(task)
                    if record_id is None:
                        record_id = created[task] = _insert_record(connection, task, host)
                    elif host:
                        connection.execute(
                            update(TaskRecord.__table__)
                            .where(TaskRecord.__table__.c.id == record_id)
                            .values(host=host)
                        )
                    connection.execute(
                        insert(TaskEvent.__table__).values(
                            task_id=record_id, event_name=event.event_name, ts=event.ts
                        )
                    )
        except SQLAlchemyError as e:
            logger.error("task history not written, retrying in %gs: %s", WRITE_EVERY_S, e)
            self._queued[:0] = queued
            return
        for task, record_id in created.items():
            task.record_id = record_id


def _insert_record(connection: Connection, task: StoredTask, host: str | None) -> int:
    """The task's row and its parameters' rows, as DbTaskHistory writes them."""
    result = connection.execute(
        insert(TaskRecord.__table__).values(task_id=task._task.id, name=task.task_family, host=host)
    )
    [record_id] = result.inserted_primary_key
    parameters = [
        {"task_id": record_id, "name": name, "value": value}
        for name, value in task.parameters.items()
    ]
    if parameters:
        connection.execute(insert(TaskParameter.__table__), parameters)
    return record_id
