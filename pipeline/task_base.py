"""What every pipeline task shares: where its data lives, and one-line failures.

The datasets are folders (or object-storage prefixes) under PARQUET_BASE_DIR; the warehouse is
one DuckDB file on the one machine that holds it.
"""

from __future__ import annotations

import logging
import time
from datetime import date
from functools import partial
from pathlib import Path
from typing import Any, TypeVar, cast

import luigi

from pipeline.config import check_settings, influx, storage
from pipeline.days import as_days
from pipeline.errors import PipelineError
from pipeline.extract import InfluxSource, shared_source
from pipeline.partitions import Dataset, open_dataset
from pipeline.publishing import Warehouse

T = TypeVar("T", bound=luigi.Task)

logger = logging.getLogger("luigi-interface")

# Progress reports are two calls to luigid each: a task tells it at most this often, and at its end.
REPORT_EVERY_S = 1.0

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


def influx_source() -> InfluxSource:
    """The configured InfluxDB, one connection per process: its day counts serve every day of
    a backfill, and the late-data checks ask it again for each day."""
    settings = influx()
    return shared_source(settings.settings(), settings.window_rows, settings.compress_answers)


def live_warehouse() -> Warehouse:
    """The configured DuckDB file, publish mode and writer-lock wait."""
    store = storage()
    return Warehouse(warehouse_file(), store.publish_mode, store.lock_timeout_s)


def task_class(cls: type[T] | partial[T]) -> type[T]:
    # RangeDaily hands bulk_complete a functools.partial of the class, not the class.
    return cast(type[T], cls.func) if isinstance(cls, partial) else cls


class PipelineTask(luigi.Task):
    """Base of the pipeline's tasks: expected failures are reported in one line."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        check_settings()  # a bad setting stops the run here, before anything is scheduled
        super().__init__(*args, **kwargs)
        # Set here, not annotated in the class body: Luigi's mypy plugin would take a class
        # annotation for a parameter.
        self.rows_written: int | None = None  # for the run log, set by run()
        self._started_at: float | None = None  # set by the run log when the task starts
        self._reported_at: float | None = None  # when report() last told luigid

    def days(self) -> list[date]:
        # Every task declares its own `date` parameter; Luigi keeps each parameter's value here.
        return as_days(self.param_kwargs["date"]).dates()

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
        """Progress for luigid's visualiser (the bar and the status line): at most once every
        REPORT_EVERY_S seconds of a run, and always when `done` reaches 1."""
        now = time.monotonic()
        if self._reported_at is None:  # the first call starts the clock: short runs stay quiet
            self._reported_at = now
        if done < 1.0 and now - self._reported_at < REPORT_EVERY_S:
            return
        self._reported_at = now
        self.set_progress_percentage(round(100 * min(max(done, 0.0), 1.0), 1))
        self.set_status_message(message)


_recovered: set[str] = set()  # the datasets this process has tidied


@PipelineTask.event_handler(luigi.Event.DEPENDENCY_PRESENT)
def _recover_crashed_writers(task: PipelineTask) -> None:
    # A rerun that finds its days complete runs nothing: tidy after crashed writers here. Luigi
    # fires this for every complete dependency (a year's range: hundreds of times), and a
    # writer tidies its own day before it writes: once per dataset and process is enough.
    for name in (LANDING_DATASET, RAW_DATASET):
        dataset = dataset_dir(name)
        if dataset.describe() not in _recovered:
            _recovered.add(dataset.describe())
            dataset.recover_all()


class DaysPerPublishTask(PipelineTask):
    """A task whose days Luigi batches, up to `[storage] days_per_publish` per run."""

    # Luigi declares max_batch_size a class attribute; its worker reads it from the instance.
    @property
    def max_batch_size(self) -> int:  # type: ignore[override]
        return storage().days_per_publish
