"""Read-side InfluxQL for the HTTP API. Nothing from a request is pasted into a query:
the source goes in as a bound parameter, times and the interval as integers we formatted."""

from __future__ import annotations

from datetime import UTC, datetime

import requests
from influxdb import InfluxDBClient
from influxdb.exceptions import InfluxDBClientError, InfluxDBServerError

from contracts.influx import quote_ident
from contracts.message import format_ts
from gateway.influx_writer import EPOCH, ONE_MS

ONE_NS_PER_MS = 1_000_000
# InfluxDB keeps time as int64 nanoseconds since 1970 (1677-09-21T00:12:43Z to
# 2262-04-11T23:47:16Z); a query outside it is a 400. Whole days inside that range:
EARLIEST_QUERY_TIME = datetime(1677, 9, 22, tzinfo=UTC)
LATEST_QUERY_TIME = datetime(2262, 4, 11, tzinfo=UTC)
# What a query may raise when InfluxDB refuses, fails or cannot be reached.
INFLUX_ERRORS = (InfluxDBClientError, InfluxDBServerError, requests.RequestException)


class ReadingQueries:
    def __init__(self, client: InfluxDBClient, measurement: str) -> None:
        self.client = client
        self.measurement = quote_ident(measurement)

    def latest(self, source: str | None) -> list[dict]:
        """The newest point of each source (or of the one asked for)."""
        where, params = _source_filter(source)
        query = (
            f"SELECT * FROM {self.measurement}{' WHERE ' + where if where else ''} "
            'GROUP BY "source" ORDER BY time DESC LIMIT 1'
        )
        return self._points(query, params)

    def downsampled(
        self, source: str | None, start: datetime, end: datetime, every_s: int
    ) -> list[dict]:
        """Per source and interval: mean and max power, last cumulative kWh, reading count."""
        where, params = _source_filter(source)
        start_ns = (start - EPOCH) // ONE_MS * ONE_NS_PER_MS
        end_ns = (end - EPOCH) // ONE_MS * ONE_NS_PER_MS
        query = (
            'SELECT mean("instant_power_w") AS "instant_power_w", '
            'max("instant_power_w") AS "max_power_w", '
            'last("energy_import_kwh") AS "energy_import_kwh", '
            'last("energy_export_kwh") AS "energy_export_kwh", '
            'count("instant_power_w") AS "power_readings" '
            f"FROM {self.measurement} WHERE time >= {int(start_ns)} AND time < {int(end_ns)}"
            f"{' AND ' + where if where else ''} "
            f'GROUP BY time({int(every_s)}s), "source" fill(none)'
        )
        return self._points(query, params)

    def _points(self, query: str, params: dict[str, str]) -> list[dict]:
        result = self.client.query(query, bind_params=params or None, epoch="ms")
        points = []
        for (_measurement, tags), rows in result.items():
            for row in rows:
                row["time"] = format_ts(EPOCH + row["time"] * ONE_MS)
                points.append({"source": (tags or {}).get("source"), **row})
        return sorted(points, key=lambda p: (p["source"] or "", p["time"]))

    def reachable(self) -> bool:
        try:
            self.client.ping()
        except Exception:  # any failure to answer is "not reachable"
            return False
        return True


def _source_filter(source: str | None) -> tuple[str, dict[str, str]]:
    if source is None:
        return "", {}
    return '"source" = $source', {"source": source}
