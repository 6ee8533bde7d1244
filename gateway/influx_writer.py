"""Readings into InfluxDB as line protocol: floats always, the point key (measurement, source, ms).

`write` sorts InfluxDB's answers into two kinds. A 400 (or 413) means the data is wrong:
the batch is split in halves until the bad points are isolated, the good ones are written
and the bad ones come back with InfluxDB's reason. Anything else (no connection, timeout,
5xx, 401/403, a missing database) is an outage: `InfluxUnavailable`, retry later.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from datetime import UTC, datetime, timedelta

import requests
from influxdb import InfluxDBClient
from influxdb.exceptions import InfluxDBClientError, InfluxDBServerError

from contracts.message import Reading
from gateway.metrics import GatewayMetrics

EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
ONE_MS = timedelta(milliseconds=1)
DATA_ERRORS = (400, 413)  # the request's content is at fault, not the server


class InfluxUnavailable(Exception):
    """InfluxDB could not take the write now; nothing in it may be acknowledged."""


def escape_measurement(name: str) -> str:
    return name.replace("\\", "\\\\").replace(",", "\\,").replace(" ", "\\ ")


def to_line(measurement: str, reading: Reading) -> str:
    """One point; `measurement` already escaped. The source pattern needs no escaping."""
    fields = ",".join(f"{name}={value!r}" for name, value in reading.measurements.items())
    return f"{measurement},source={reading.source} {fields} {(reading.ts - EPOCH) // ONE_MS}"


class InfluxWriter:
    def __init__(self, client: InfluxDBClient, measurement: str, metrics: GatewayMetrics) -> None:
        self.client = client
        self.measurement = escape_measurement(measurement)
        self.metrics = metrics

    def write(self, readings: Sequence[Reading]) -> list[tuple[int, str]]:
        """Write the readings; return (index, reason) of those InfluxDB refused as bad data."""
        lines = [to_line(self.measurement, r) for r in readings]
        refused: list[tuple[int, str]] = []
        self._write_isolating(lines, 0, refused)
        return refused

    def _write_isolating(self, lines: list[str], offset: int, refused: list) -> None:
        try:
            self._post(lines)
        except InfluxDBClientError as exc:
            if exc.code not in DATA_ERRORS:
                raise InfluxUnavailable(f"InfluxDB answered {_describe(exc)}") from exc
            if len(lines) == 1:
                refused.append((offset, f"InfluxDB refused the point: {_describe(exc)}"))
                return
            # Re-writing the half that was fine is harmless: the same point is a no-op.
            half = len(lines) // 2
            self._write_isolating(lines[:half], offset, refused)
            self._write_isolating(lines[half:], offset + half, refused)

    def _post(self, lines: list[str]) -> None:
        started = time.perf_counter()
        try:
            self.client.write_points(lines, time_precision="ms", protocol="line")
        except (InfluxDBClientError, InfluxDBServerError, requests.RequestException) as exc:
            self.metrics.write_errors.inc()
            if isinstance(exc, InfluxDBClientError):
                raise
            raise InfluxUnavailable(f"InfluxDB unreachable: {str(exc)[:300]}") from exc
        finally:
            self.metrics.write_latency.observe(time.perf_counter() - started)


def _describe(exc: InfluxDBClientError) -> str:
    content = (
        exc.content.decode(errors="replace") if isinstance(exc.content, bytes) else exc.content
    )
    return f"{exc.code} {str(content).strip()[:300]}"
