"""Readings out of InfluxDB as Arrow, one time window at a time.

Windows are fetched as CSV (`Accept: application/csv`) and parsed by pyarrow's CSV reader, so no
reading passes through a Python loop, and memory is bounded by the window, not the day. The CSV
format reports errors as an empty answer, so a JSON preflight (`SHOW FIELD KEYS`) first proves the
server, the credentials and the database.
"""

from __future__ import annotations

import io
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from zoneinfo import ZoneInfo

import pyarrow as pa
import pyarrow.csv as pacsv
import pyarrow.parquet as pq
import requests
from influxdb.exceptions import InfluxDBClientError, InfluxDBServerError

from contracts.influx import SOURCE_TAG, InfluxSettings, make_client, quote_ident
from contracts.message import MEASUREMENT_FIELDS
from pipeline.days import day_window_utc
from pipeline.errors import PipelineError

LANDING_SCHEMA = pa.schema(
    [
        ("time", pa.timestamp("ms", tz="UTC")),
        (SOURCE_TAG, pa.string()),
        *((name, pa.float64()) for name in MEASUREMENT_FIELDS),
    ]
)

Progress = Callable[[datetime, int], None]


def _ns(instant: datetime) -> int:
    return int(instant.timestamp()) * 1_000_000_000 + instant.microsecond * 1000


def time_windows(
    start: datetime, end: datetime, step: timedelta
) -> Iterator[tuple[datetime, datetime]]:
    while start < end:
        yield start, min(start + step, end)
        start += step


@dataclass
class ExtractStats:
    rows: int = 0
    field_counts: dict[str, int] = field(
        default_factory=lambda: dict.fromkeys(MEASUREMENT_FIELDS, 0)
    )


class InfluxSource:
    """The measurement of the contract in one InfluxDB, read as Arrow tables."""

    def __init__(self, settings: InfluxSettings, window: timedelta = timedelta(hours=1)) -> None:
        self.settings = settings
        self.window = window
        self.client = make_client(settings)

    def _describe(self) -> str:
        return f"InfluxDB at {self.settings.url} (database {self.settings.database!r})"

    def _call(self, what: Callable[[], object]) -> object:
        """Run one request, turning transport and server failures into one-line errors."""
        try:
            return what()
        except requests.exceptions.ConnectionError as e:
            if "Connection refused" in str(e) or "NewConnectionError" in str(e):
                raise PipelineError(
                    f"{self._describe()} is unreachable (connection refused)"
                ) from None
            raise _broke_off(self._describe(), e) from None
        except requests.exceptions.Timeout:
            raise PipelineError(
                f"{self._describe()} did not answer within {self.settings.timeout_s:g}s"
            ) from None
        except requests.exceptions.RequestException as e:
            # e.g. ChunkedEncodingError: the server died or the connection broke mid-answer.
            raise _broke_off(self._describe(), e) from None
        except InfluxDBClientError as e:
            if e.code in (401, 403):
                raise PipelineError(
                    f"{self._describe()} refused the credentials (HTTP {e.code}): "
                    "check INFLUX_USERNAME/INFLUX_PASSWORD or INFLUX_TOKEN"
                ) from None
            raise PipelineError(f"{self._describe()} rejected a query: {e.content}") from None
        except InfluxDBServerError as e:
            raise PipelineError(f"{self._describe()} failed: {e}") from None

    def preflight(self) -> set[str]:
        """Field keys of the measurement; raises a PipelineError if the server can't be used.

        A database or measurement that does not exist is a configuration error (a mistyped
        INFLUX_BUCKET or INFLUX_MEASUREMENT), never a day without readings.
        """
        measurements = {p["name"] for p in self._points("SHOW MEASUREMENTS")}
        if self.settings.measurement not in measurements:
            raise PipelineError(
                f"{self._describe()} has no measurement {self.settings.measurement!r} "
                + (
                    f"(it has {sorted(measurements)}): check INFLUX_MEASUREMENT"
                    if measurements
                    else "(the database is empty or does not exist): check INFLUX_BUCKET"
                )
            )
        q = f"SHOW FIELD KEYS FROM {quote_ident(self.settings.measurement)}"
        return {p["fieldKey"] for p in self._points(q)}

    def _points(self, q: str) -> list[dict]:
        result = self._call(lambda: self.client.query(q, database=self.settings.database))
        return list(result.get_points())  # type: ignore[attr-defined]

    def window_table(self, start: datetime, end: datetime) -> pa.Table:
        """Readings with start <= time < end, in the landing schema."""
        columns = ", ".join(quote_ident(c) for c in (*MEASUREMENT_FIELDS, SOURCE_TAG))
        q = (
            f"SELECT {columns} FROM {quote_ident(self.settings.measurement)} "
            f"WHERE time >= {_ns(start)} AND time < {_ns(end)}"
        )
        response = self._call(
            lambda: self.client.request(
                "query",
                method="POST",
                params={"q": q, "db": self.settings.database, "epoch": "ms"},
                headers={"Accept": "application/csv"},
            )
        )
        return parse_csv(response.content)  # type: ignore[attr-defined]

    def daily_field_counts(
        self, first: date, last: date, zone: ZoneInfo
    ) -> dict[date, dict[str, int]]:
        """Readings per field and local day from `first` to `last`, in one aggregate query."""
        start, _ = day_window_utc(first, zone)
        _, end = day_window_utc(last, zone)
        q = (
            f"SELECT count(*) FROM {quote_ident(self.settings.measurement)} "
            f"WHERE time >= {_ns(start)} AND time < {_ns(end)} "
            f"GROUP BY time(1d) tz('{zone.key}')"
        )
        result = self._call(
            lambda: self.client.query(q, database=self.settings.database, epoch="ms")
        )
        counts = {}
        for point in result.get_points():  # type: ignore[attr-defined]
            day = datetime.fromtimestamp(point["time"] / 1000, tz=UTC).astimezone(zone).date()
            counts[day] = {
                name: int(point.get(f"count_{name}") or 0) for name in MEASUREMENT_FIELDS
            }
        return counts

    def extract(
        self, start: datetime, end: datetime, path: Path, compression: str, progress: Progress
    ) -> ExtractStats:
        """Write every reading in [start, end) to one Parquet file, window by window."""
        self.preflight()
        stats = ExtractStats()
        with pq.ParquetWriter(path, LANDING_SCHEMA, compression=compression) as writer:
            for w_start, w_end in time_windows(start, end, self.window):
                table = self.window_table(w_start, w_end)
                writer.write_table(table)
                stats.rows += table.num_rows
                for name in MEASUREMENT_FIELDS:
                    stats.field_counts[name] += table.num_rows - table[name].null_count
                progress(w_end, stats.rows)
        return stats


def _broke_off(server: str, e: Exception) -> PipelineError:
    return PipelineError(
        f"{server} broke off its answer ({type(e).__name__}); nothing was replaced, rerun "
        "when it is back"
    )


def parse_csv(content: bytes) -> pa.Table:
    if not content.strip():
        return LANDING_SCHEMA.empty_table()
    if not content.startswith(b"name,tags,time"):
        raise PipelineError(f"InfluxDB answered with something that is not CSV: {content[:200]!r}")
    try:
        table = _read_landing_csv(content)
    except pa.ArrowInvalid as e:
        raise PipelineError(
            f"InfluxDB returned a value that is not a number ({str(e).splitlines()[0]}); "
            "every field must be written as a float"
        ) from None
    time_ms = table["time"].cast(pa.timestamp("ms")).cast(pa.timestamp("ms", tz="UTC"))
    return table.set_column(0, "time", time_ms).cast(LANDING_SCHEMA)


def _read_landing_csv(content: bytes) -> pa.Table:
    return pacsv.read_csv(
        io.BytesIO(content),
        convert_options=pacsv.ConvertOptions(
            column_types={
                "time": pa.int64(),
                SOURCE_TAG: pa.string(),
                **dict.fromkeys(MEASUREMENT_FIELDS, pa.float64()),
            },
            include_columns=list(LANDING_SCHEMA.names),
            include_missing_columns=True,
            strings_can_be_null=True,
        ),
    )
