"""The daily tasks: ExtractDay -> ParquetDay -> DuckLoadDay -> DbtBuild.

Each task's Target says whether its day is done and current: a partition folder with a manifest,
or a marker row whose fingerprint matches the partition it loaded. `bulk_complete` answers the
same question for many days at once (one folder listing, one marker query), which is what lets
RangeDaily check a year in a moment.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable
from datetime import UTC, date, datetime, timedelta

from pipeline.config import calendar, influx, storage
from pipeline.database import connect
from pipeline.days import LocalDateParameter, LocalDaysParameter, day_window_utc, first_day
from pipeline.errors import PipelineError
from pipeline.extract import InfluxSource
from pipeline.late_data import (
    SourceCoversArchive,
    archive_kept_message,
    gained_in_source,
    shrinkage,
)
from pipeline.markers import (
    MarkerTarget,
    mark_dbt_days,
    marker_ids,
    neighbourhood_fingerprint,
    read_markers,
)
from pipeline.partitions import PartitionTarget, list_partitions
from pipeline.task_base import (
    LANDING_DATASET,
    RAW_DATASET,
    PipelineTask,
    dataset_dir,
    live_warehouse,
    task_class,
    warehouse_file,
)
from pipeline.transform import write_canonical
from pipeline.warehouse import load_day

logger = logging.getLogger("luigi-interface")


class ExtractDay(PipelineTask):
    """One local day of readings from InfluxDB, as the source gave them (the landing archive)."""

    date = LocalDateParameter(description="local day YYYY-MM-DD; default yesterday")
    priority = 30

    def requires(self) -> SourceCoversArchive:
        return SourceCoversArchive(date=self.date)

    def output(self) -> PartitionTarget:
        return PartitionTarget(dataset_dir(LANDING_DATASET), self.date)

    def run(self) -> None:
        settings = influx()
        source = InfluxSource(settings.settings(), timedelta(minutes=settings.window_minutes))
        start, end = day_window_utc(self.date, calendar().zone)
        span = (end - start).total_seconds()

        reported = [-1]

        def progress(upto: datetime, rows: int) -> None:
            # Each report is two calls to luigid: tell it at each quarter of the day only.
            done = (upto - start).total_seconds() / span
            if int(done * 4) > reported[0]:
                reported[0] = int(done * 4)
                self.report(done, f"{rows:,} readings extracted")

        with self.output().writing() as staged:
            extracted_at = datetime.now(UTC)
            stats = source.extract(
                start,
                end,
                staged.folder / "part-0.parquet",
                compression=_arrow_codec(storage().parquet_compression),
                progress=progress,
            )
            archive = self.output()
            if archive.archived() and not archive.accepts_fewer():
                shrunk = shrinkage(stats.field_counts, archive.manifest())
                if shrunk:
                    raise PipelineError(archive_kept_message(self.date, shrunk))
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
                settings.settings().url,
                start,
                end,
            )

    def complete(self) -> bool:
        # Not PipelineTask's: SourceCoversArchive is a precondition of running, not an input.
        return self.output().exists() and self.date not in gained_in_source([self.date])

    @classmethod
    def bulk_complete(cls, parameter_tuples: Iterable[date]) -> list[date]:
        done = list_partitions(dataset_dir(LANDING_DATASET))
        archived = [d for d in parameter_tuples if first_day(d) in done]
        gained = gained_in_source([first_day(d) for d in archived])
        return [d for d in archived if first_day(d) not in gained]


def _arrow_codec(codec: str) -> str:
    return "none" if codec == "uncompressed" else codec


class ParquetDay(PipelineTask):
    """The canonical `raw_meter_readings` partition of one day, rebuilt when the landing changes."""

    date = LocalDateParameter(description="local day YYYY-MM-DD; default yesterday")
    priority = 20

    def requires(self) -> ExtractDay:
        return ExtractDay(date=self.date)

    def output(self) -> PartitionTarget:
        landing = self.requires().output().fingerprint()
        return PartitionTarget(dataset_dir(RAW_DATASET), self.date, built_from=landing or "-")

    def run(self) -> None:
        landing = self.input()
        manifest = landing.manifest()
        cal, store = calendar(), storage()
        with self.output().writing() as staged:
            stats = write_canonical(
                landing,
                staged.folder / "part-0.parquet",
                tz=cal.tz,
                source_default=cal.source_default,
                ingested_at=datetime.fromisoformat(manifest["extracted_at"]),
                compression=store.parquet_compression,
                row_group_size=store.parquet_row_group_size,
                memory_limit=store.duckdb_memory_limit,
                spill_dir=staged.folder.with_name(staged.folder.name + ".spill"),
            )
            staged.manifest.update(
                rows=stats.rows, sources=stats.sources, built_from=landing.fingerprint()
            )
        self.rows_written = stats.rows
        self.report(1.0, f"{stats.rows:,} readings from {stats.sources} source(s)")

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
    listed = list_partitions(dataset)
    return dataset.manifests(day for day in days if day in listed)


class DuckLoadDay(PipelineTask):
    """A day (or a batch of days) of readings loaded into DuckDB with its marker row.

    Batched runs load many days and publish the database once; `[storage] days_per_publish`
    bounds how many days one publish carries.
    """

    date = LocalDaysParameter(description="local day YYYY-MM-DD (or a span); default yesterday")
    priority = 10

    @property
    def max_batch_size(self) -> int:  # read by Luigi's worker when it sets up batching
        return storage().days_per_publish

    resources = {"duckdb": 1}  # noqa: RUF012  (Luigi reads it from the class)

    def requires(self) -> list[ParquetDay]:
        return [ParquetDay(date=day) for day in self.days()]

    def output(self) -> list[MarkerTarget]:
        live = warehouse_file()
        ids = marker_ids(self.get_task_family(), self.days())
        return [
            MarkerTarget(live, ids[part.day], part.fingerprint())
            for part in (p.output() for p in self.requires())
        ]

    def run(self) -> None:
        zone = calendar().zone
        ids = marker_ids(self.get_task_family(), self.days())
        total = 0
        with live_warehouse().writing() as con:
            for n, part in enumerate(t.output() for t in self.requires()):
                total += load_day(
                    con,
                    partition=part,
                    window_utc=day_window_utc(part.day, zone),
                    update_id=ids[part.day],
                    day=part.day,
                    fingerprint=part.fingerprint() or "",
                )
                self.report((n + 1) / len(ids), f"{total:,} rows loaded, day {part.day}")
        self.rows_written = total
        self.report(1.0, f"{total:,} rows in {len(ids)} day(s) published")

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
