"""Local days: the half-open interval [00:00, 24:00) in the pipeline time zone, as UTC instants."""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from datetime import UTC, date, datetime, time, timedelta, tzinfo

import luigi
from luigi.date_interval import Custom, DateInterval

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


def days_in(interval: DateInterval) -> Iterator[date]:
    yield from interval.dates()


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


class LocalDaysParameter(luigi.DateIntervalParameter):
    """One past local day or a span of them: `2025-12-17`, `2025-12`, or `2025-12-01-2025-12-08`
    (Luigi's custom span, end exclusive: December 1 to 7).

    Batched runs combine their days into the span that covers them, so a backfill loads many days
    with one publish. RangeDaily passes plain dates, which become one-day spans.
    """

    def __init__(self, **kwargs: object) -> None:
        super().__init__(batch_method=covering_span, **kwargs)

    def parse(self, s: str) -> DateInterval:
        try:
            interval = super().parse(s)
        except ValueError:
            interval = None
        if interval is None:
            raise ValueError(f"--date {s!r} is not a date: expected YYYY-MM-DD (or a span)")
        return interval

    def normalize(self, value: object) -> DateInterval:
        interval = as_interval(value)  # type: ignore[arg-type]
        zone = calendar().zone
        check_past_day(interval.date_b - timedelta(days=1), zone)
        return interval

    def _value_iterator(self, task_name: str, param_name: str) -> Iterator[tuple[object, None]]:
        yield from super()._value_iterator(task_name, param_name)
        yield (as_interval(local_today(calendar().zone) - timedelta(days=1)), None)


def as_interval(value: date | DateInterval) -> DateInterval:
    if isinstance(value, DateInterval):
        return value
    if isinstance(value, datetime):
        value = value.date()
    return luigi.date_interval.Date(value.year, value.month, value.day)


def covering_span(intervals: Iterable[DateInterval]) -> DateInterval:
    intervals = list(intervals)
    start = min(i.date_a for i in intervals)
    end = max(i.date_b for i in intervals)
    if end - start == timedelta(days=1):
        return as_interval(start)
    return Custom(start, end)
