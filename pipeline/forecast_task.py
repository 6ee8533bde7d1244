"""ForecastDay: the next 48 half hours and 7 days of every source, made for a local day.

A forecast made for day D reads the half hours of `fct_half_hourly_energy` up to the end of D
(never later ones, even in a backfill that has loaded them), so it is the same whichever run
makes it. It is written with the pipeline's publishing (a copy of the database, verified,
swapped in) and one marker row per day whose fingerprint covers the DbtBuild markers of every
day it read plus the forecast settings: a rebuilt day, late data inside the history, or a new
setting makes the forecast stale, and the next run makes it again.

Backfills: Luigi hands a run every pending day at once (one publish), but only days within
`[forecast] recent_days` before today are forecast; older days are marked done with no
forecast. Which days are forecast depends on the day and today, never on the batch, so a
year's backfill and the same days run one at a time give the same forecasts.
"""

from __future__ import annotations

import hashlib
import logging
from collections.abc import Iterable, Mapping
from datetime import UTC, date, datetime, timedelta
from typing import TYPE_CHECKING

import duckdb

from pipeline.config import calendar, forecast
from pipeline.database import connect, has_table
from pipeline.days import LocalDaysParameter, first_day, local_today
from pipeline.errors import PipelineError
from pipeline.failpoints import failpoint
from pipeline.markers import (
    MarkerRow,
    MarkerTarget,
    marker_ids,
    markers_in,
    read_markers,
    write_markers,
)
from pipeline.schema import MARKER_TABLE
from pipeline.task_base import PipelineTask, live_warehouse, task_class, warehouse_file
from pipeline.tasks import DbtBuild

if TYPE_CHECKING:
    import pandas as pd  # imported where used: a second of every run's start, for no other task

logger = logging.getLogger("luigi-interface")

FORECAST_TABLE = "fct_energy_forecast"
ACCURACY_TABLE = "forecast_accuracy"
MIN_DAYS = 14  # two weeks: what MSTL's weekly season and the daily AutoETS need
# Raise when the models change: every forecast's fingerprint changes, so they are made again.
MODELS_VERSION = 1

FORECAST_SCHEMA_SQL = f"""
create table if not exists {FORECAST_TABLE} (
    source varchar not null,
    made_for date not null,
    made_at timestamptz not null,
    granularity varchar not null check (granularity in ('half_hour', 'day')),
    target_start_utc timestamptz not null,
    target_date_jst date not null,
    horizon integer not null,
    model varchar not null,
    value_kwh double not null,
    lower_kwh double not null,
    upper_kwh double not null,
    level integer not null,
    primary key (source, made_for, granularity, target_start_utc)
);
create table if not exists {ACCURACY_TABLE} (
    source varchar not null,
    made_for date not null,
    model varchar not null,
    metric varchar not null check (metric in ('mae', 'rmse', 'mape', 'wape')),
    value double,
    window_days integer not null,
    chosen boolean not null,
    primary key (source, made_for, model, metric)
);
"""

HISTORY_SQL = """
select source, date_jst, bucket_start_utc, energy_kwh
from fct_half_hourly_energy
where date_jst between ? and ?
order by source, bucket_start_utc
"""


def forecast_fingerprint(built: Mapping[str, str | None], day: date) -> str | None:
    """What a forecast made for `day` was made from: the DbtBuild markers of the days it
    reads and the settings; None while DbtBuild has not built the day itself."""
    settings = forecast()
    family = DbtBuild.get_task_family()
    ids = marker_ids(family, [day - timedelta(days=k) for k in range(settings.history_days)])
    if built.get(ids[day]) is None:
        return None
    parts = [
        f"models v{MODELS_VERSION}",
        f"fit {settings.fit_days}, backtest {settings.backtest_days}, "
        f"min {settings.min_history_days}, tz {calendar().tz}",
        *(built.get(i) or "-" for i in ids.values()),
    ]
    return hashlib.sha256("|".join(parts).encode()).hexdigest()[:32]


def checked_settings() -> forecast:
    """The [forecast] settings, refused in one line when the models cannot work with them."""
    settings = forecast()
    for name in ("fit_days", "min_history_days"):
        if getattr(settings, name) < MIN_DAYS:
            raise PipelineError(
                f"[forecast] {name} = {getattr(settings, name)}: the weekly models need at "
                f"least {MIN_DAYS} days"
            )
    if settings.backtest_days < 1 or settings.recent_days < 0:
        raise PipelineError(
            f"[forecast] backtest_days = {settings.backtest_days} must be at least 1 and "
            f"recent_days = {settings.recent_days} at least 0"
        )
    return settings


def recent_since() -> date:
    """The first day forecast: `[forecast] recent_days` back from yesterday."""
    return local_today(calendar().zone) - timedelta(days=forecast().recent_days)


def is_recent(day: date) -> bool:
    return day >= recent_since()


class ForecastDay(PipelineTask):
    """Forecasts made for a day (or a batch of days) from the energy marts, published."""

    date = LocalDaysParameter(description="local day YYYY-MM-DD (or a span); default yesterday")
    priority = -10
    max_batch_size = 400  # a year's backfill publishes once
    resources = {"duckdb": 1}  # noqa: RUF012  (Luigi reads it from the class)

    def requires(self) -> list[DbtBuild]:
        return [DbtBuild(date=day) for day in self.days()]

    def output(self) -> list[MarkerTarget]:
        live = warehouse_file()
        built = read_markers(live, f"{DbtBuild.get_task_family()}(")
        ids = marker_ids(self.get_task_family(), self.days())
        return [MarkerTarget(live, ids[d], forecast_fingerprint(built, d)) for d in ids]

    def run(self) -> None:
        # statsforecast takes seconds to import: only the task that forecasts pays for that.
        from pipeline.forecast_models import forecast_sources

        zone, settings = calendar().zone, checked_settings()
        rows, unforecast, old = 0, [], 0
        with live_warehouse().writing() as con:
            con.execute(FORECAST_SCHEMA_SQL)
            built = markers_in(con, f"{DbtBuild.get_task_family()}(")
            # Recent forecasts a rebuilt day made stale (it is in their history) are made
            # again now, not a run later.
            days = sorted({*self.days(), *stale_recent_days(con, built)})
            ids = marker_ids(self.get_task_family(), days)
            for n, day in enumerate(days):
                fingerprint = forecast_fingerprint(built, day)
                if fingerprint is None:
                    raise PipelineError(f"DbtBuild has not built {day}: nothing to forecast from")
                results = []
                if is_recent(day):
                    self.report(n / len(days), f"forecasting for {day}")
                    results = forecast_sources(read_history(con, day), day, zone, settings)
                    unforecast += [r.skipped for r in results if r.skipped]
                    if not results:
                        unforecast.append(f"no source has data on {day}")
                else:
                    old += 1
                rows += replace_day(con, day, results, ids[day], fingerprint)
        self.rows_written = rows
        self.report(1.0, self._summary(rows, unforecast, old))

    def _summary(self, rows: int, unforecast: list[str], old: int) -> str:
        """One line for luigid's status and the log (a warning when a source got none)."""
        parts = [f"{rows:,} forecast rows"]
        if unforecast:
            parts.append("no forecast where " + "; ".join(unforecast))
        if old:
            parts.append(
                f"{old} day(s) older than [forecast] recent_days={forecast().recent_days} "
                "marked without a forecast"
            )
        summary = ", ".join(parts)
        logger.log(logging.WARNING if unforecast else logging.INFO, "%s: %s", self, summary)
        return summary

    @classmethod
    def bulk_complete(cls, parameter_tuples: Iterable[date]) -> list[date]:
        family = task_class(cls).get_task_family()
        live = warehouse_file()
        built = read_markers(live, f"{DbtBuild.get_task_family()}(")
        made = read_markers(live, f"{family}(")
        return [
            value
            for value in DbtBuild.bulk_complete(parameter_tuples)
            if made.get(marker_ids(family, [first_day(value)])[first_day(value)])
            == forecast_fingerprint(built, first_day(value))
        ]


def stale_recent_days(con: duckdb.DuckDBPyConnection, built: dict[str, str | None]) -> list[date]:
    """Recent days whose forecast was made from DbtBuild markers that have changed since."""
    made = con.execute(
        f"select partition_date, fingerprint from {MARKER_TABLE} "
        "where starts_with(update_id, ?) and partition_date >= ?",
        [f"{ForecastDay.get_task_family()}(", recent_since()],
    ).fetchall()
    return [
        day
        for day, fingerprint in made
        if forecast_fingerprint(built, day) not in (None, fingerprint)
    ]


def read_history(con: duckdb.DuckDBPyConnection, day: date) -> pd.DataFrame:
    """The half hours a forecast made for `day` may use, UTC instants and local dates."""
    import pandas as pd

    first = day - timedelta(days=forecast().history_days - 1)
    history = con.execute(HISTORY_SQL, [first, day]).df()
    history["bucket_start_utc"] = pd.to_datetime(history["bucket_start_utc"], utc=True)
    history["date_jst"] = pd.to_datetime(history["date_jst"]).dt.date
    return history


def replace_day(con, day: date, results: list, update_id: str, fingerprint: str) -> int:
    """Delete what was made for `day`, insert the new forecasts and accuracy, mark the day:
    one transaction, so a rerun or a crash never leaves half a day."""
    made_at = datetime.now(UTC)
    forecasts = forecast_rows(results, day, made_at)
    accuracy = accuracy_rows(results, day)
    con.execute("begin transaction")
    try:
        for table, frame in ((FORECAST_TABLE, forecasts), (ACCURACY_TABLE, accuracy)):
            con.execute(f"delete from {table} where made_for = ?", [day])
            if len(frame):
                con.register("new_rows", frame)
                con.execute(f"insert into {table} by name select * from new_rows")
                con.unregister("new_rows")
        write_markers(con, [MarkerRow(update_id, FORECAST_TABLE, day, len(forecasts), fingerprint)])
        failpoint("forecast.before_commit")
        con.execute("commit")
    except BaseException:
        con.execute("rollback")
        raise
    return len(forecasts)


def forecast_rows(results: list, day: date, made_at: datetime) -> pd.DataFrame:
    import pandas as pd

    zone = calendar().zone
    frames = [
        frame.assign(source=r.source, granularity=granularity)
        for r in results
        if not r.skipped
        for granularity, frame in (("half_hour", r.half_hours), ("day", r.days))
    ]
    if not frames:
        return pd.DataFrame()
    rows = pd.concat(frames, ignore_index=True)
    return rows.assign(
        made_for=day,
        made_at=made_at,
        target_date_jst=rows["target_start_utc"].dt.tz_convert(zone).dt.date,
    )


def accuracy_rows(results: list, day: date) -> pd.DataFrame:
    import pandas as pd

    frames = [
        r.accuracy.assign(source=r.source, made_for=day, window_days=r.backtest_days)
        for r in results
        if r.accuracy is not None
    ]
    return pd.concat(frames, ignore_index=True) if frames else pd.DataFrame()


def forecast_states(days: list[date]) -> dict[date, str]:
    """Per day, for `status`: ok (current), none (current, no forecast), stale, or -."""
    live = warehouse_file()
    family = ForecastDay.get_task_family()
    ids = marker_ids(family, days)
    built = read_markers(live, f"{DbtBuild.get_task_family()}(")
    made = read_markers(live, f"{family}(")
    counts = forecast_counts(days)
    states = {}
    for day, update_id in ids.items():
        if update_id not in made:
            states[day] = "-"
        elif made[update_id] != forecast_fingerprint(built, day):
            states[day] = "stale"
        else:
            states[day] = "ok" if counts.get(day) else "none"
    return states


def forecast_counts(days: list[date]) -> dict[date, int]:
    live = warehouse_file()
    if not live.exists():
        return {}
    with connect(live, read_only=True) as con:
        if not has_table(con, MARKER_TABLE):
            return {}
        rows = con.execute(
            f"select partition_date, row_count from {MARKER_TABLE} "
            "where target_table = ? and partition_date between ? and ?",
            [FORECAST_TABLE, days[0], days[-1]],
        ).fetchall()
    return dict(rows)
