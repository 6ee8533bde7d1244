"""The daily tasks: ExtractDay -> ParquetDay -> DuckLoadDay -> DbtBuild.

Each task's Target says whether its day is done and current: a partition folder with a manifest,
or a marker row whose fingerprint matches the partition it loaded. `bulk_complete` answers the
same question for many days at once (one folder listing, one marker query), which is what lets
RangeDaily check a year in a moment.
"""

from __future__ import annotations

import hashlib
import logging
from collections.abc import Iterable
from datetime import UTC, date, datetime, timedelta
from functools import partial
from pathlib import Path

import luigi

from contracts.influx import FIELDS
from pipeline.config import calendar, influx, late_data, storage
from pipeline.days import (
    LocalDateParameter,
    LocalDaysParameter,
    as_days,
    day_window_utc,
    first_day,
    local_today,
)
from pipeline.errors import PipelineError
from pipeline.extract import InfluxSource
from pipeline.partitions import (
    Dataset,
    PartitionTarget,
    list_partitions,
    open_dataset,
)
from pipeline.transform import write_canonical
from pipeline.warehouse import (
    MarkerTarget,
    Warehouse,
    connect,
    load_day,
    marker_ids,
    markers_in,
    read_markers,
    write_marker,
)

logger = logging.getLogger("luigi-interface")

LANDING_DATASET = "landing/power"
RAW_DATASET = "raw_meter_readings"


def dataset_dir(name: str) -> Dataset:
    """A dataset under PARQUET_BASE_DIR: a local folder or a prefix on object storage."""
    return open_dataset(storage().parquet_base_dir, name)


def warehouse_file() -> Path:
    """The live DuckDB file, on the one machine that holds it (design.md section 11)."""
    store = storage()
    if not store.holds_warehouse:
        raise PipelineError(
            "this worker does not hold the DuckDB warehouse (PIPELINE_HOLDS_WAREHOUSE=false): "
            "run RangeDaily --of ParquetDay here, and DuckLoadDay/DbtBuild on the warehouse "
            "machine"
        )
    return store.duckdb_file


def live_warehouse() -> Warehouse:
    """The configured DuckDB file, publish mode and writer-lock wait."""
    store = storage()
    return Warehouse(warehouse_file(), store.publish_mode, store.lock_timeout_s)


def task_class(cls: type | partial) -> type:
    # RangeDaily hands bulk_complete a functools.partial of the class, not the class.
    return cls.func if isinstance(cls, partial) else cls


class PipelineTask(luigi.Task):
    """Base of the pipeline's tasks: expected failures are reported in one line."""

    rows_written: int | None = None  # for the run log, set by run()

    def days(self) -> list[date]:
        return as_days(self.date).dates()

    def complete(self) -> bool:
        # Luigi looks no further than a complete task, so a day is complete only while what it
        # was built from is complete (current) too: late data upstream then reaches every stage.
        return super().complete() and all(t.complete() for t in luigi.task.flatten(self.requires()))

    def on_failure(self, exception: BaseException) -> str:
        if isinstance(exception, PipelineError):
            logger.error("%s failed: %s", self.task_id, exception)
            return f"{type(exception).__name__}: {exception}"
        return super().on_failure(exception)

    def report(self, done: float, message: str) -> None:
        """Progress for luigid's visualiser (the bar and the status line)."""
        self.set_progress_percentage(round(100 * min(max(done, 0.0), 1.0), 1))
        self.set_status_message(message)


@PipelineTask.event_handler(luigi.Event.DEPENDENCY_PRESENT)
def _recover_crashed_writers(task: PipelineTask) -> None:
    # A rerun that finds its days complete runs nothing: tidy after crashed writers here.
    for name in (LANDING_DATASET, RAW_DATASET):
        dataset_dir(name).recover_all()


class SourceCoversArchive(luigi.ExternalTask):
    """InfluxDB still holds at least the readings archived for the day (or none are archived).

    The archive outlives the source: a day re-extracted after retention deleted it, or from a
    misconfigured source, must not replace the archive with less. While this is incomplete,
    ExtractDay does not run and the command exits with the missing-data code (3).
    """

    date = LocalDateParameter(description="local day YYYY-MM-DD; default yesterday")

    def complete(self) -> bool:
        archive = PartitionTarget(dataset_dir(LANDING_DATASET), self.date)
        if not archive.archived() or archive.accepts_fewer():
            return True
        try:
            counts = InfluxSource(influx().settings()).daily_field_counts(
                self.date, self.date, calendar().zone
            )
        except PipelineError:
            return True  # the extraction itself reports the server's failure in one line
        shrunk = shrinkage(counts.get(self.date, dict.fromkeys(FIELDS, 0)), archive.manifest())
        if shrunk:
            logger.error(archive_kept_message(self.date, shrunk))
        return not shrunk


def shrinkage(new_counts: dict[str, int], manifest: dict) -> str | None:
    """'191 < 192' when a new extraction holds fewer values than the archived one, else None.

    Values (readings times the fields each carries) rather than rows, because InfluxDB counts
    per field; a source that gained readings while losing a few still replaces the day.
    """
    new, archived = sum(new_counts.values()), sum(manifest.get("field_counts", {}).values())
    return f"{new:,} < {archived:,}" if new < archived else None


def archive_kept_message(day: date, shrunk: str) -> str:
    return (
        f"{day}: the source holds fewer values than the archive ({shrunk}); the archive is "
        f"kept. To replace it anyway: python -m pipeline rebuild --date {day} --accept-fewer; "
        f"to keep it and stop asking: python -m pipeline rebuild --date {day} --cancel"
    )


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


def gained_in_source(days: list[date]) -> set[date]:
    """Archived days inside the late-data lookback that gained readings in InfluxDB since.

    One aggregate query covers the whole lookback. Only gains count: edges replay, they never
    delete, and a source that lost readings (retention, a restored server) must not shrink the
    archive. Removals and values rewritten in place take an explicit `rebuild`.
    """
    zone = calendar().zone
    oldest = local_today(zone) - timedelta(days=late_data().lookback_days)
    recent = sorted(d for d in days if d >= oldest)
    if not recent:
        return set()
    settings = influx()
    try:
        source = InfluxSource(settings.settings())
        counts = source.daily_field_counts(recent[0], recent[-1], zone)
    except PipelineError as e:
        logger.warning("late data not checked for %s..%s: %s", recent[0], recent[-1], e)
        return set()
    archived = dataset_dir(LANDING_DATASET).manifests(recent)
    nothing = dict.fromkeys(FIELDS, 0)
    return {d for d in recent if _gained(counts.get(d, nothing), archived[d]["field_counts"])}


def _gained(source: dict[str, int], archived: dict[str, int]) -> bool:
    return any(source[name] > archived.get(name, 0) for name in FIELDS)


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
        return [MarkerTarget(live, ids[d], neighbourhood_fingerprint(loads, d)) for d in ids]

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
                marked = mark_dbt_days(con, self.get_task_family(), days)
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
            == neighbourhood_fingerprint(loads, first_day(value))
        ]


def neighbourhood_fingerprint(loads: dict[str, str | None], day: date) -> str | None:
    """The loads a day's energy depends on: the day before, the day, the day after."""
    family = DuckLoadDay.get_task_family()
    ids = marker_ids(family, [day - timedelta(days=1), day, day + timedelta(days=1)])
    if loads.get(ids[day]) is None:
        return None
    parts = [loads.get(i) or "-" for i in ids.values()]
    return hashlib.sha256("|".join(parts).encode()).hexdigest()[:32]


def mark_dbt_days(con, family: str, days: list[date]) -> int:
    """Mark every day dbt rebuilt: the batch and its neighbours (whose midnight split changed)."""
    loads = markers_in(con, f"{DuckLoadDay.get_task_family()}(")
    window = [days[0] - timedelta(days=1), *days, days[-1] + timedelta(days=1)]
    marked = 0
    for day, update_id in marker_ids(family, window).items():
        fingerprint = neighbourhood_fingerprint(loads, day)
        if fingerprint is None:
            continue
        write_marker(
            con,
            update_id,
            "fct_daily_energy",
            partition_date=day,
            row_count=None,
            fingerprint=fingerprint,
        )
        marked += 1
    return marked
