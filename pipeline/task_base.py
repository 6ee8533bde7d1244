"""What every pipeline task shares: where its data lives, and one-line failures.

The datasets are folders (or object-storage prefixes) under PARQUET_BASE_DIR; the warehouse is
one DuckDB file on the one machine that holds it.
"""

from __future__ import annotations

import logging
from datetime import date
from functools import partial
from pathlib import Path

import luigi

from pipeline.config import check_settings, storage
from pipeline.days import as_days
from pipeline.errors import PipelineError
from pipeline.partitions import Dataset, open_dataset
from pipeline.publishing import Warehouse

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

    def __init__(self, *args: object, **kwargs: object) -> None:
        check_settings()  # a bad setting stops the run here, before anything is scheduled
        super().__init__(*args, **kwargs)

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
