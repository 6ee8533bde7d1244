"""luigid's cheap pending count (scheduler/counting.py) gives Luigi's own counts."""

from __future__ import annotations

import luigi.scheduler
import pytest
from luigi.task_status import DISABLED, DONE, FAILED, PENDING

from scheduler.counting import PendingCountScheduler

WORKER = "worker-1"


def play(scheduler: luigi.scheduler.Scheduler, blocked_by: str | None) -> None:
    """Three days of three tasks each (extract <- load <- build), d2's extract done and d3's
    failed; then the task `blocked_by`, if any, disabled."""
    for day in ("d1", "d2", "d3"):
        scheduler.add_task(worker=WORKER, task_id=f"extract_{day}", status=PENDING)
        scheduler.add_task(
            worker=WORKER, task_id=f"load_{day}", status=PENDING, deps=[f"extract_{day}"]
        )
        scheduler.add_task(
            worker=WORKER, task_id=f"build_{day}", status=PENDING, deps=[f"load_{day}"]
        )
    scheduler.add_task(worker=WORKER, task_id="extract_d2", status=DONE)
    scheduler.add_task(worker=WORKER, task_id="extract_d3", status=FAILED)
    if blocked_by:
        scheduler.add_task(worker=WORKER, task_id=blocked_by, status=DISABLED)


@pytest.mark.parametrize("blocked_by", [None, "extract_d1", "load_d2"])
def test_pending_counts_are_luigis(blocked_by: str | None) -> None:
    counts = []
    for kind in (luigi.scheduler.Scheduler, PendingCountScheduler):
        scheduler = kind()
        play(scheduler, blocked_by)
        counts.append(scheduler.count_pending(WORKER))
        counts.append(scheduler.get_work(worker=WORKER)["n_pending_tasks"])
    luigis_count, luigis_work, count, work = counts
    assert count == luigis_count and work == luigis_work
    # Tasks a disabled one blocks are not counted (the disabled task itself is not pending).
    blocked = {None: 0, "extract_d1": 3, "load_d2": 2}[blocked_by]
    assert count["n_pending_tasks"] == 8 - blocked


def test_the_visualiser_still_sees_upstream_states() -> None:
    scheduler = PendingCountScheduler()
    play(scheduler, blocked_by=None)
    scheduler.count_pending(WORKER)
    listed = scheduler.task_list(PENDING, "UPSTREAM_FAILED")
    assert sorted(listed) == ["build_d3", "load_d3"]
