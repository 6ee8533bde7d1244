"""Luigi's scheduler, with the count of pending tasks it sends every worker made cheap.

Every `get_work` answer carries `count_pending`: for each of the worker's pending tasks, Luigi
walks its upstream tasks to leave out those a disabled task blocks. A year's backfill keeps
about a thousand tasks pending, so each of its 391 `get_work` calls walked them all: a third of
luigid's busy time (profiled with cProfile during `scripts/bench_backfill.py`). Skipped, the
worker's 391 requests for work took 1.80 s instead of 2.26 s.

The walk can only find UPSTREAM_DISABLED through a task whose status is DISABLED (Luigi's
`_upstream_status` maps each status to an upstream one and keeps the most severe). While no
task is disabled, the walk is skipped and the counts are the same. A task is disabled only
after `[scheduler] retry_count` failures within `disable_window` (Luigi's default count is
999999999) or by hand in the visualiser.
"""

from __future__ import annotations

from typing import Any

import luigi.scheduler
from luigi.task_status import DISABLED


class PendingCountScheduler(luigi.scheduler.Scheduler):
    """luigi.scheduler.Scheduler; `count_pending` walks upstream only when a task is disabled."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._walk_upstream = True

    def count_pending(self, worker: str) -> dict[str, Any]:
        if self._any_disabled():
            return super().count_pending(worker)
        self._walk_upstream = False
        try:
            return super().count_pending(worker)
        finally:
            self._walk_upstream = True

    def _upstream_status(self, task_id: str, upstream_status_table: dict[str, str]) -> str:
        # count_pending compares the answer with UPSTREAM_DISABLED only; the visualiser's
        # task lists, which show the upstream status, always walk.
        if not self._walk_upstream:
            return ""
        return super()._upstream_status(task_id, upstream_status_table)

    def _any_disabled(self) -> bool:
        return next(iter(self._state.get_active_tasks_by_status(DISABLED)), None) is not None
