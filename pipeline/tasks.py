"""The daily tasks: ExtractDay -> ParquetDay -> DuckLoadDay -> DbtBuild.

Each task's Target says whether its day is done and current: a partition folder with a manifest,
or a marker row whose fingerprint matches the partition it loaded. `bulk_complete` answers the
same question for many days at once (one folder listing, one marker query), which is what lets
RangeDaily check a year in a moment.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable
from datetime import UTC, date, datetime

from pipeline.config import calendar, storage
from pipeline.database import connect
from pipeline.days import LocalDateParameter, LocalDaysParameter, day_window_utc, first_day
from pipeline.errors import PipelineError
from pipeline.late_data import (
    SourceCoversArchive,
    archive_kept,
    gained_in_source,
    guards,
)
from pipeline.markers import (
    MarkerTarget,
    mark_dbt_days,
    marker_ids,
    neighbourhood_fingerprint,
    read_markers,
)
from pipeline.partitions import PartitionTarget
from pipeline.task_base import (
    LANDING_DATASET,
    RAW_DATASET,
    DaysPerPublishTask,
    PipelineTask,
    dataset_dir,
    influx_source,
    live_warehouse,
    task_class,
    warehouse_file,
)
from pipeline.transform import CanonicalWriter, arrow_codec
from pipeline.warehouse import DayLoad, load_days

logger = logging.getLogger("luigi-interface")


class ExtractDay(PipelineTask):
    """One local day of readings from InfluxDB, as the source gave them (the landing archive)."""

    date = LocalDateParameter(description="local day YYYY-MM-DD; default yesterday")
    priority = 30

    def requires(self) -> list[SourceCoversArchive]:
        # Only an archived day has something to guard (run() checks again before it replaces
        # one); for a day never extracted, as in a backfill, it would be one more task for
        # luigid to track per day, for nothing.
        return [SourceCoversArchive(date=self.date)] if self.output().archived() else []

    def output(self) -> PartitionTarget:
        return PartitionTarget(dataset_dir(LANDING_DATASET), self.date)

    def run(self) -> None:
        source = influx_source()
        zone = calendar().zone
        start, end = day_window_utc(self.date, zone)
        span = (end - start).total_seconds()

        def progress(upto: datetime, rows: int) -> None:
            if upto < end:  # a day's end needs no report: the task is done a moment later
                self.report((upto - start).total_seconds() / span, f"{rows:,} readings extracted")

        with self.output().writing() as staged:
            extracted_at = datetime.now(UTC)
            stats = source.extract(
                self.date,
                zone,
                staged.folder / "part-0.parquet",
                compression=arrow_codec(storage().parquet_compression),
                progress=progress,
            )
            archive = self.output()
            if guards(archive) and (kept := archive_kept(archive, stats.field_counts)):
                raise PipelineError(kept)
            staged.manifest.update(
                rows=stats.rows,
                field_counts=stats.field_counts,
                extracted_at=extracted_at.isoformat(),
                window_utc=[start.isoformat(), end.isoformat()],
            )
        self.rows_written = stats.rows
        if stats.rows == 0:
            logger.warning(
                "no readings for %s in %s between %s and %s: archived an empty day",
                self.date,
                source.settings.url,
                start,
                end,
            )

    def complete(self) -> bool:
        # Not PipelineTask's: SourceCoversArchive is a precondition of running, not an input.
        return self.output().exists() and self.date not in gained_in_source([self.date])

    @classmethod
    def bulk_complete(cls, parameter_tuples: Iterable[date]) -> list[date]:
        done = dataset_dir(LANDING_DATASET).current_days()
        archived = [d for d in parameter_tuples if first_day(d) in done]
        gained = gained_in_source([first_day(d) for d in archived])
        return [d for d in archived if first_day(d) not in gained]


class ParquetDay(DaysPerPublishTask):
    """The canonical `raw_meter_readings` partition of a day (or of each day of a batch), rebuilt
    when the landing changes.

    Luigi batches the days of a backfill (at most `[storage] days_per_publish`): one task run
    builds them all, each day still its own partition (`CanonicalWriter` chooses Arrow or DuckDB
    per day). A day that fails fails its batch; the days built before it stay built.
    """

    date = LocalDaysParameter(description="local day YYYY-MM-DD (or a span); default yesterday")
    priority = 20

    def requires(self) -> list[ExtractDay]:
        return [ExtractDay(date=day) for day in self.days()]

    def output(self) -> list[PartitionTarget]:
        raw = dataset_dir(RAW_DATASET)
        return [
            PartitionTarget(raw, extract.date, built_from=extract.output().fingerprint() or "-")
            for extract in self.requires()
        ]

    def run(self) -> None:
        cal, store = calendar(), storage()
        total = 0
        days = list(zip(self.input(), self.output(), strict=True))
        with CanonicalWriter(
            tz=cal.tz,
            source_default=cal.source_default,
            compression=store.parquet_compression,
            row_group_size=store.parquet_row_group_size,
            memory_limit=store.duckdb_memory_limit,
        ) as writer:
            for n, (landing, target) in enumerate(days):
                with target.writing() as staged:
                    stats = writer.write(landing, staged.folder / "part-0.parquet")
                    staged.manifest.update(
                        rows=stats.rows, sources=stats.sources, built_from=stats.built_from
                    )
                total += stats.rows
                self.report((n + 1) / len(days), f"{total:,} readings, day {target.day}")
        self.rows_written = total
        self.report(1.0, f"{total:,} readings in {len(days)} day(s)")

    @classmethod
    def bulk_complete(cls, parameter_tuples: Iterable[date]) -> list[date]:
        extracted = ExtractDay.bulk_complete(parameter_tuples)
        days = [first_day(d) for d in extracted]
        landing = dataset_dir(LANDING_DATASET).manifests(days)
        raw = current_manifests(RAW_DATASET, days)
        return [
            value
            for value, day in zip(extracted, days, strict=True)
            if day in raw and raw[day].get("built_from") == landing[day]["fingerprint"]
        ]


def current_manifests(name: str, days: list[date]) -> dict[date, dict]:
    """The manifests of the days a dataset holds current (one listing, then the reads)."""
    dataset = dataset_dir(name)
    listed = dataset.current_days()
    return dataset.manifests(day for day in days if day in listed)


class DuckLoadDay(DaysPerPublishTask):
    """A day (or a batch of days) of readings loaded into DuckDB with its marker row.

    Batched runs load many days and publish the database once; `[storage] days_per_publish`
    bounds how many days one publish carries.
    """

    date = LocalDaysParameter(description="local day YYYY-MM-DD (or a span); default yesterday")
    priority = 10

    resources = {"duckdb": 1}  # noqa: RUF012  (Luigi reads it from the class)

    def requires(self) -> list[ParquetDay]:
        return [ParquetDay(date=day) for day in self.days()]

    def partitions(self) -> list[PartitionTarget]:
        return [part for task in self.requires() for part in task.output()]

    def output(self) -> list[MarkerTarget]:
        live = warehouse_file()
        ids = marker_ids(self.get_task_family(), self.days())
        return [MarkerTarget(live, ids[p.day], p.fingerprint()) for p in self.partitions()]

    def run(self) -> None:
        zone = calendar().zone
        ids = marker_ids(self.get_task_family(), self.days())
        loads = [
            DayLoad(
                partition=part,
                window_utc=day_window_utc(part.day, zone),
                update_id=ids[part.day],
                fingerprint=part.fingerprint() or "",
            )
            for part in self.partitions()
        ]

        def loaded(rows: int) -> None:
            self.report(1.0, f"{rows:,} rows loaded, day {loads[-1].partition.day}")

        with live_warehouse().writing() as con:
            total = load_days(con, loads, loaded)
        self.rows_written = total
        self.report(1.0, f"{total:,} rows in {len(loads)} day(s) published")

    @classmethod
    def bulk_complete(cls, parameter_tuples: Iterable[date]) -> list[date]:
        family = task_class(cls).get_task_family()
        markers = read_markers(warehouse_file(), f"{family}(")
        archived = ParquetDay.bulk_complete(parameter_tuples)
        days = [first_day(value) for value in archived]
        raw = dataset_dir(RAW_DATASET).manifests(days)
        ids = marker_ids(family, days)
        return [
            value
            for value, day in zip(archived, days, strict=True)
            if day in raw and markers.get(ids[day]) == raw[day]["fingerprint"]
        ]


class DbtBuild(PipelineTask):
    """The dbt models rebuilt for a day (or a batch of days), published like the loads.

    A day's energy depends on its neighbours (the interval across each midnight is split between
    two days), so its marker fingerprints the loads of the day before, the day and the day after:
    loading day D+1 makes day D stale, and one dbt run refreshes both.
    """

    date = LocalDaysParameter(description="local day YYYY-MM-DD (or a span); default yesterday")
    priority = 0
    max_batch_size = 400  # a year's backfill runs dbt once
    resources = {"duckdb": 1}  # noqa: RUF012  (Luigi reads it from the class)

    def requires(self) -> list[DuckLoadDay]:
        return [DuckLoadDay(date=day) for day in self.days()]

    def output(self) -> list[MarkerTarget]:
        live = warehouse_file()
        loads = read_markers(live, f"{DuckLoadDay.get_task_family()}(")
        ids = marker_ids(self.get_task_family(), self.days())
        return [
            MarkerTarget(
                live, ids[d], neighbourhood_fingerprint(loads, DuckLoadDay.get_task_family(), d)
            )
            for d in ids
        ]

    def run(self) -> None:
        days = self.days()
        self.report(0.0, f"dbt build for {days[0]}..{days[-1]}")
        # dbt takes seconds to import: only the task that runs it pays for that.
        from pipeline.dbt_runner import run_dbt_build

        with live_warehouse().publishing() as path:
            result = run_dbt_build(
                path,
                start_date=days[0],
                end_date=days[-1],
                time_zone=calendar().tz,
                memory_limit=storage().duckdb_memory_limit,
            )
            with connect(path) as con:
                marked = mark_dbt_days(
                    con, self.get_task_family(), DuckLoadDay.get_task_family(), days
                )
        self.report(1.0, f"{result.models} models, {result.tests} tests; {marked} day(s) marked")

    @classmethod
    def bulk_complete(cls, parameter_tuples: Iterable[date]) -> list[date]:
        family = task_class(cls).get_task_family()
        live = warehouse_file()
        loads = read_markers(live, f"{DuckLoadDay.get_task_family()}(")
        built = read_markers(live, f"{family}(")
        return [
            value
            for value in DuckLoadDay.bulk_complete(parameter_tuples)
            if built.get(marker_ids(family, [first_day(value)])[first_day(value)])
            == neighbourhood_fingerprint(loads, DuckLoadDay.get_task_family(), first_day(value))
        ]
