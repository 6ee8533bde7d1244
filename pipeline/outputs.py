"""Where the marts go after the warehouse: InfluxDB for Grafana, MQTT for Home Assistant.

`InfluxWriteBackDay` and `HomeAssistantPublishDay` run after the day's marts are built. Neither
writes the warehouse (publishing a marker there would copy the whole database), so each keeps a
small marker file per day beside it, `<duckdb folder>/outputs/<task>/<day>.json`, holding the
fingerprint of the warehouse markers it wrote from: the day is done while those are unchanged,
and a rebuilt day (late data, a neighbour's load) is written again. A marker is written only
after InfluxDB or the broker acknowledged everything, so a crash at any point means a rerun.
"""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Iterable
from datetime import UTC, date, datetime, tzinfo
from pathlib import Path

import duckdb
import luigi

from pipeline import config
from pipeline.database import connect
from pipeline.days import LocalDaysParameter, first_day
from pipeline.failpoints import failpoint
from pipeline.forecast_task import ForecastDay
from pipeline.ha_publish import household_messages, publish
from pipeline.influx_marts import write_back
from pipeline.markers import marker_ids, read_markers
from pipeline.partitions import fsync_path
from pipeline.task_base import PipelineTask, task_class, warehouse_file
from pipeline.tasks import DbtBuild

# The tasks whose warehouse markers the outputs are built from: the marts and the forecast.
BUILT_FROM: tuple[type[luigi.Task], ...] = (DbtBuild, ForecastDay)
# Bump when what is written for a day changes, so every day is written again.
OUTPUT_FORMAT = "1"


def marker_folder(task_family: str) -> Path:
    return warehouse_file().parent / "outputs" / task_family


def upstream_fingerprints(days: Iterable[date]) -> dict[date, str]:
    """Per day, a fingerprint of the markers of BUILT_FROM (days missing any are left out)."""
    live = warehouse_file()
    markers = {cls: read_markers(live, f"{cls.get_task_family()}(") for cls in BUILT_FROM}
    result = {}
    for day in days:
        parts = [
            markers[cls].get(marker_ids(cls.get_task_family(), [day])[day]) for cls in BUILT_FROM
        ]
        if all(parts):
            text = "|".join([OUTPUT_FORMAT, *parts])  # type: ignore[list-item]
            result[day] = hashlib.sha256(text.encode()).hexdigest()[:32]
    return result


class OutputMarker(luigi.Target):
    """`<folder>/<day>.json`, current while its fingerprint is the upstream's."""

    def __init__(self, folder: Path, day: date, fingerprint: str | None) -> None:
        self.path = folder / f"{day.isoformat()}.json"
        self.fingerprint = fingerprint

    def exists(self) -> bool:
        return self.fingerprint is not None and read_marker(self.path) == self.fingerprint

    def write(self, **details: object) -> None:
        """Atomically: a temporary file, fsynced, renamed over the old marker."""
        self.path.parent.mkdir(parents=True, exist_ok=True)
        record = {"built_from": self.fingerprint, "written_at": datetime.now(UTC).isoformat()}
        staged = self.path.with_name(f".{self.path.name}.{os.getpid()}.tmp")
        staged.write_text(json.dumps(record | details) + "\n")
        fsync_path(staged)
        os.replace(staged, self.path)
        fsync_path(self.path.parent)


def read_marker(path: Path) -> str | None:
    try:
        return json.loads(path.read_text())["built_from"]
    except (OSError, ValueError, KeyError):
        return None  # absent or torn: not done


class OutputDayTask(PipelineTask):
    """A day's outputs, batched like DbtBuild: a backfill writes them in one run."""

    date = LocalDaysParameter(description="local day YYYY-MM-DD (or a span); default yesterday")
    priority = -10
    max_batch_size = 400

    @classmethod
    def enabled(cls) -> bool:
        """False: there is nothing to do, every day is complete."""
        return True

    def requires(self) -> list[luigi.Task]:
        return [cls(date=day) for cls in BUILT_FROM for day in self.days()]

    def complete(self) -> bool:
        return not self.enabled() or super().complete()

    def output(self) -> list[OutputMarker]:
        folder = marker_folder(self.get_task_family())
        fingerprints = upstream_fingerprints(self.days())
        return [OutputMarker(folder, day, fingerprints.get(day)) for day in self.days()]

    @classmethod
    def bulk_complete(cls, parameter_tuples: Iterable[date]) -> list[date]:
        task = task_class(cls)
        values = list(parameter_tuples)
        if not task.enabled():
            return values
        folder = marker_folder(task.get_task_family())
        fingerprints = upstream_fingerprints(first_day(v) for v in values)
        done = {
            value
            for value in values
            if (fp := fingerprints.get(first_day(value)))
            and read_marker(folder / f"{first_day(value).isoformat()}.json") == fp
        }
        # A day is complete only while what it was built from is (as PipelineTask.complete).
        for upstream in BUILT_FROM:
            done &= set(upstream.bulk_complete(iter(done))) if done else set()
        return [v for v in values if v in done]

    def run(self) -> None:
        zone = config.calendar().zone
        with connect(warehouse_file(), read_only=True) as con:
            details = self.write_outputs(con, self.days(), zone)
        failpoint("outputs.written")
        for marker in self.output():
            marker.write(**details)

    def write_outputs(
        self, con: duckdb.DuckDBPyConnection, days: list[date], zone: tzinfo
    ) -> dict[str, object]:
        raise NotImplementedError


class InfluxWriteBackDay(OutputDayTask):
    """The day's marts as InfluxDB measurements (energy_daily, energy_cost_daily,
    energy_forecast), rewritten in place on every run."""

    def write_outputs(
        self, con: duckdb.DuckDBPyConnection, days: list[date], zone: tzinfo
    ) -> dict[str, object]:
        points = write_back(con, days, zone, config.influx().settings())
        self.rows_written = points
        self.report(1.0, f"{points:,} points written to InfluxDB")
        return {"points": points}


class HomeAssistantPublishDay(OutputDayTask):
    """The latest day's energy, cost and the billing period's projection as Home Assistant
    sensors (MQTT discovery); complete at once while `[homeassistant] enabled` is false."""

    @classmethod
    def enabled(cls) -> bool:
        return config.homeassistant().enabled

    def write_outputs(
        self, con: duckdb.DuckDBPyConnection, days: list[date], zone: tzinfo
    ) -> dict[str, object]:
        settings = config.homeassistant()
        messages = household_messages(con, days, zone, settings.discovery_prefix)
        if messages:
            broker = config.mqtt()
            publish(broker.settings(), messages, broker.timeout_s)
        self.rows_written = len(messages)
        self.report(1.0, f"{len(messages)} Home Assistant message(s) published")
        return {"messages": len(messages)}
