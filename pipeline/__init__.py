"""The daily pipeline, as Luigi tasks: `luigi --module pipeline DuckLoadDay --date 2025-12-17`."""

import gc
import logging
import warnings

import luigi.rpc
from luigi.parameter import UnconsumedParameterWarning

from pipeline import runlog  # noqa: F401  (registers the run-log event handlers)
from pipeline.errors import OneLineExpectedFailures
from pipeline.forecast_task import ForecastDay
from pipeline.luigi_client import KeepAliveFetcher
from pipeline.nightly import NightlyDay
from pipeline.outputs import HomeAssistantPublishDay, InfluxWriteBackDay
from pipeline.ranges import RangeDaily
from pipeline.reports import ReportDay
from pipeline.tasks import DbtBuild, DuckLoadDay, ExtractDay, ParquetDay

logging.getLogger("luigi-interface").addFilter(OneLineExpectedFailures())

# luigid's round trips on kept-alive connections (pipeline/luigi_client.py): Luigi's
# RemoteScheduler makes its fetcher from this name when it is created, after this import.
luigi.rpc.RequestsFetcher = KeepAliveFetcher  # type: ignore[misc]  # a subclass of it

# Luigi's own noise on every run, not the user's business: it does read [core] rpc-retry-*
# and default-scheduler-* (through aliases its check does not know), and RangeDaily's
# param_name defaults to None.
warnings.filterwarnings(
    "ignore",
    "The configuration contains the parameter '(rpc_retry_|default_scheduler_)",
    UnconsumedParameterWarning,
)
warnings.filterwarnings("ignore", 'Parameter "param_name" with value "None"', UserWarning)

# What is imported by now (Luigi, DuckDB, pyarrow, the tasks) lives as long as the process.
# Frozen, it is no longer scanned by the garbage collector's full collections, nor by the one
# at exit: a cold one-day run ends 0.05 s sooner.
gc.freeze()

__all__ = [
    "DbtBuild",
    "DuckLoadDay",
    "ExtractDay",
    "ForecastDay",
    "HomeAssistantPublishDay",
    "InfluxWriteBackDay",
    "NightlyDay",
    "ParquetDay",
    "RangeDaily",
    "ReportDay",
]
