"""What the nightly run asks for each day: `RangeDaily --of NightlyDay --days-back 7`.

A day is done when everything it feeds is: its report (which needs the forecast, the marts,
the load and the archive before it), its marts written back to InfluxDB for Grafana, and Home
Assistant's sensors. One name for cron, systemd and compose, whatever is added after DbtBuild.
"""

from __future__ import annotations

from collections.abc import Iterable
from datetime import date

import luigi

from pipeline.days import LocalDateParameter
from pipeline.outputs import HomeAssistantPublishDay, InfluxWriteBackDay
from pipeline.reports import ReportDay

# Each day's goals; every one implements bulk_complete, so a range is checked in a few queries.
GOALS: tuple[type[luigi.Task], ...] = (ReportDay, InfluxWriteBackDay, HomeAssistantPublishDay)


class NightlyDay(luigi.WrapperTask):
    """Every output of one local day."""

    date = LocalDateParameter(description="local day YYYY-MM-DD; default yesterday")

    def requires(self) -> list[luigi.Task]:
        return [goal(date=self.date) for goal in GOALS]

    @classmethod
    def bulk_complete(cls, parameter_tuples: Iterable[date]) -> list[date]:
        days = list(parameter_tuples)
        done = set(days)
        for goal in GOALS:
            done &= set(goal.bulk_complete(iter([d for d in days if d in done])))
        return [d for d in days if d in done]
