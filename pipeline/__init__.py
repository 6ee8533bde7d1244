"""The daily pipeline, as Luigi tasks: `luigi --module pipeline DuckLoadDay --date 2025-12-17`."""

from pipeline import runlog  # noqa: F401  (registers the run-log event handlers)
from pipeline.forecast_task import ForecastDay
from pipeline.ranges import RangeDaily
from pipeline.tasks import DbtBuild, DuckLoadDay, ExtractDay, ParquetDay

__all__ = ["DbtBuild", "DuckLoadDay", "ExtractDay", "ForecastDay", "ParquetDay", "RangeDaily"]
