"""RangeDaily over local days: `luigi --module pipeline RangeDaily --of DbtBuild --days-back 7`.

Luigi's RangeDaily counts days in UTC from a naive UTC "now" and its stop is "now" itself, so it
would include today (and, west of UTC, tomorrow's local day) and miss yesterday in the hours
after local midnight. This subclass keeps Luigi's range logic and its name (Luigi resolves a
task name to the most derived class), and moves the window to the pipeline's local calendar:
[today - days_back, today), today never included. `--days-back` alone is enough: the start
defaults to a day before any reading, so the window is the last days_back days.
"""

from __future__ import annotations

from datetime import date, datetime, time, timedelta

import luigi
import luigi.tools.range

from pipeline.config import calendar
from pipeline.days import local_today


class RangeDaily(luigi.tools.range.RangeDaily):
    # Luigi's RangeDailyBase declares `start` with a default of None, so mypy's luigi plugin
    # types it None there.
    start = luigi.DateParameter(  # type: ignore[assignment]
        default=date(2000, 1, 1),
        description="first day, inclusive; by default the window is the last --days-back days",
    )
    # Luigi requires at most 50 days per run by default; a year's backfill is one run here,
    # batched into bounded publishes by the tasks themselves.
    task_limit = luigi.IntParameter(default=1000, description="most days required in one run")

    def _local_midnight(self, now_utc: datetime) -> datetime:
        return datetime.combine(local_today(calendar().zone, now_utc), time())

    def moving_start(self, now: datetime) -> datetime:
        return self._local_midnight(now) - timedelta(days=self.days_back)

    def moving_stop(self, now: datetime) -> datetime:
        return self._local_midnight(now) + timedelta(days=self.days_forward)
