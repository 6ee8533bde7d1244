"""Local days: the half-open interval [00:00, 24:00) in the pipeline time zone, as UTC instants."""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from datetime import UTC, date, datetime, time, timedelta, tzinfo
from typing import Any

import luigi
from luigi import date_interval

from pipeline.config import calendar


def day_window_utc(day: date, zone: tzinfo) -> tuple[datetime, datetime]:
    """UTC bounds of a local day; 23 or 25 hours long on a DST change."""
    start = datetime.combine(day, time(), tzinfo=zone).astimezone(UTC)
    end = datetime.combine(day + timedelta(days=1), time(), tzinfo=zone).astimezone(UTC)
    return start, end


def local_today(zone: tzinfo, now_utc: datetime | None = None) -> date:
    now = now_utc or datetime.now(UTC)
    if now.tzinfo is None:  # RangeDaily passes a naive UTC "now"
        now = now.replace(tzinfo=UTC)
    return now.astimezone(zone).date()


def check_past_day(day: date, zone: tzinfo) -> date:
    """A day is archived only once it has ended in the pipeline time zone."""
    today = local_today(zone)
    if day >= today:
        raise ValueError(
            f"--date {day.isoformat()} is not over yet in {zone} (today is {today.isoformat()}); "
            "only past days can be archived"
        )
    return day


class LocalDateParameter(luigi.DateParameter):
    """A past local day, YYYY-MM-DD; without a value, yesterday in the pipeline time zone."""

    def parse(self, s: str) -> date:
        try:
            return super().parse(s)
        except ValueError:
            raise ValueError(f"--date {s!r} is not a date: expected YYYY-MM-DD") from None

    def normalize(self, value: object) -> date:
        day = super().normalize(value)
        return check_past_day(day, calendar().zone)

    def _value_iterator(self, task_name: str, param_name: str) -> Iterator[tuple[object, None]]:
        yield from super()._value_iterator(task_name, param_name)
        yield (local_today(calendar().zone) - timedelta(days=1), None)


class DaySet(tuple):
    """Sorted distinct local days, written as Luigi spans: `2025-12-17`, `2025-12-01-2025-12-08`
    (end exclusive, as Luigi's custom intervals), or several of those joined by commas."""

    def __new__(cls, days: Iterable[date]) -> DaySet:
        return super().__new__(cls, sorted(set(days)))

    def dates(self) -> list[date]:
        return list(self)

    def __str__(self) -> str:
        runs: list[list[date]] = []
        for day in self:
            if runs and day - runs[-1][-1] == timedelta(days=1):
                runs[-1].append(day)
            else:
                runs.append([day])
        return ",".join(
            str(run[0]) if len(run) == 1 else f"{run[0]}-{run[-1] + timedelta(days=1)}"
            for run in runs
        )


class LocalDaysParameter(luigi.Parameter):
    """One past local day, a span (`2025-12`, `2025-12-01-2025-12-08`), or several, comma-joined.

    Luigi batches pending tasks by joining their days, so a backfill loads many days with one
    publish; a batch carries exactly its days, never the gaps between them.
    """

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(batch_method=union, **kwargs)

    def parse(self, s: str) -> DaySet:
        days: list[date] = []
        for part in s.split(","):
            interval = _parse_interval(part.strip())
            if interval is None:
                raise ValueError(f"--date {s!r} is not a date: expected YYYY-MM-DD (or a span)")
            days += interval.dates()
        return DaySet(days)

    def normalize(self, value: object) -> DaySet:
        days = as_days(value)  # type: ignore[arg-type]
        check_past_day(days[-1], calendar().zone)
        return days

    def serialize(self, value: DaySet) -> str:
        return str(value)

    def _value_iterator(self, task_name: str, param_name: str) -> Iterator[tuple[object, None]]:
        yield from super()._value_iterator(task_name, param_name)
        yield (as_days(local_today(calendar().zone) - timedelta(days=1)), None)


def _parse_interval(text: str) -> date_interval.DateInterval | None:
    for kind in (date_interval.Date, date_interval.Month, date_interval.Custom):
        try:
            interval = kind.parse(text)
        except ValueError:
            return None
        if interval is not None:
            return interval
    return None


def first_day(value: date | DaySet) -> date:
    """A bulk_complete value as a day: a date, or the first day of a batch's DaySet."""
    return value[0] if isinstance(value, DaySet) else value


def as_days(value: date | DaySet | Iterable[date]) -> DaySet:
    if isinstance(value, DaySet):
        return value
    if isinstance(value, datetime):
        return DaySet([value.date()])
    if isinstance(value, date):
        return DaySet([value])
    return DaySet(value)


def union(values: Iterable[DaySet]) -> DaySet:
    return DaySet(day for days in values for day in days)
