"""The daily pipeline, as Luigi tasks: `luigi --module pipeline DuckLoadDay --date 2025-12-17`."""

import logging

from pipeline import runlog  # noqa: F401  (registers the run-log event handlers)
from pipeline.errors import OneLineExpectedFailures
from pipeline.ranges import RangeDaily
from pipeline.tasks import DbtBuild, DuckLoadDay, ExtractDay, ParquetDay

logging.getLogger("luigi-interface").addFilter(OneLineExpectedFailures())

__all__ = ["DbtBuild", "DuckLoadDay", "ExtractDay", "ParquetDay", "RangeDaily"]
