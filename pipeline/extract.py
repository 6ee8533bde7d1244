"""Readings out of InfluxDB as Arrow, one time window at a time.

Windows are fetched as CSV (`Accept: application/csv`) and parsed by pyarrow's CSV reader, so no
reading passes through a Python loop, and memory is bounded by the window, not the day. A day is
first asked for whole, up to one reading more than a window holds: a day of one meter is that one
query. A larger day is counted, and cut into windows sized by its count: a day of a hundred meters
takes a few dozen. The CSV format reports errors as an empty answer, so when a
day comes back empty a JSON preflight (`SHOW FIELD KEYS`) proves the server, the credentials and
the database: a mistyped name is an error, not an empty day.
"""

from __future__ import annotations

import io
import json
import math
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from zoneinfo import ZoneInfo

import pyarrow as pa
import pyarrow.csv as pacsv
import pyarrow.parquet as pq
import requests

from contracts.influx import SOURCE_TAG, InfluxSettings, query_session, quote_ident
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
    start: datetime, end: datetime, expected_rows: int, window_rows: int
) -> Iterator[tuple[datetime, datetime]]:
    """[start, end) cut into equal windows expected to hold at most `window_rows` readings each
    (whole milliseconds, the source's precision)."""
    pieces = max(1, math.ceil(expected_rows / window_rows))
    step = timedelta(milliseconds=math.ceil((end - start) / timedelta(milliseconds=1) / pieces))
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

    def __init__(
        self, settings: InfluxSettings, window_rows: int = 200_000, compress_answers: bool = False
    ) -> None:
        self.settings = settings
        self.window_rows = window_rows
        self.session, self.query_url = query_session(settings)
        # requests asks for gzip by default. InfluxDB takes about 155 ms to compress a day at
        # 1 Hz (4 MB of CSV), more than a gigabit link takes to carry it plain: plain unless
        # asked (luigi.cfg has the break-even).
        self.session.headers["Accept-Encoding"] = "gzip" if compress_answers else "identity"
        self._counts: dict[date, dict[str, int]] = {}  # per local day, to size windows

    def _describe(self) -> str:
        return f"InfluxDB at {self.settings.url} (database {self.settings.database!r})"

    def _query(self, q: str, accept: str = "application/json") -> requests.Response:
        """One query, its transport and server failures turned into one-line errors."""
        params = {"q": q, "db": self.settings.database, "epoch": "ms"}
        try:
            response = self.session.post(
                self.query_url,
                params=params,
                headers={"Accept": accept},
                timeout=self.settings.timeout_s,
            )
            content = response.content  # read here: a connection broken mid-answer raises now
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
        if response.status_code in (401, 403):
            raise PipelineError(
                f"{self._describe()} refused the credentials (HTTP {response.status_code}): "
                "check INFLUX_USERNAME/INFLUX_PASSWORD or INFLUX_TOKEN"
            )
        if response.status_code >= 500:
            raise PipelineError(
                f"{self._describe()} failed: {response.status_code}: {_error_of(content)}"
            )
        if response.status_code != 200:
            raise PipelineError(f"{self._describe()} rejected a query: {_error_of(content)}")
        return response

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
        """The rows of a query's answer (JSON) as dicts, every series in turn."""
        [result] = self._query(q).json()["results"]
        if "error" in result:
            raise PipelineError(f"{self._describe()} rejected a query: {result['error']}")
        return [
            dict(zip(series["columns"], values, strict=True))
            for series in result.get("series", [])
            for values in series["values"]
        ]

    def window_table(self, start: datetime, end: datetime, limit: int | None = None) -> pa.Table:
        """Readings with start <= time < end (the first `limit` of them), in the landing schema."""
        columns = ", ".join(quote_ident(c) for c in (*MEASUREMENT_FIELDS, SOURCE_TAG))
        q = (
            f"SELECT {columns} FROM {quote_ident(self.settings.measurement)} "
            f"WHERE time >= {_ns(start)} AND time < {_ns(end)}"
            + (f" LIMIT {limit}" if limit is not None else "")
        )
        return parse_csv(self._query(q, accept="application/csv").content)

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
        counts = {}
        for point in self._points(q):
            day = datetime.fromtimestamp(point["time"] / 1000, tz=UTC).astimezone(zone).date()
            counts[day] = {
                name: int(point.get(f"count_{name}") or 0) for name in MEASUREMENT_FIELDS
            }
        return counts

    def expected_rows(self, day: date, zone: ZoneInfo, around: int = 30) -> int:
        """Readings the source holds for a local day (the most of any field), to size windows.

        Counted for the `around` days either side of it too, in one query, and kept for the
        other days of a backfill (Luigi runs them newest first or oldest first): a count that
        went stale only makes a window larger or smaller.
        """
        if day not in self._counts:
            first, last = day - timedelta(days=around), day + timedelta(days=around)
            try:
                counts = self.daily_field_counts(first, last, zone)
            except PipelineError:
                self.preflight()  # a mistyped database or measurement, said as such
                raise
            self._counts.update({first + timedelta(days=n): {} for n in range(2 * around + 1)})
            self._counts.update(counts)
        return max(self._counts[day].values(), default=0)

    def extract(
        self, day: date, zone: ZoneInfo, path: Path, *, compression: str, progress: Progress
    ) -> ExtractStats:
        """Write every reading of a local day to one Parquet file."""
        stats = ExtractStats()
        # Dictionary pages only for the source: times and values are mostly distinct, and
        # encoding them so makes the file larger and slower to write (a 1 Hz day: 0.6 MB in
        # 17 ms against 0.3 MB in 10 ms).
        with pq.ParquetWriter(
            path, LANDING_SCHEMA, compression=compression, use_dictionary=[SOURCE_TAG]
        ) as writer:
            for upto, table in self._day_tables(day, zone):
                writer.write_table(table)
                stats.rows += table.num_rows
                for name in MEASUREMENT_FIELDS:
                    stats.field_counts[name] += table.num_rows - table[name].null_count
                progress(upto, stats.rows)
        if stats.rows == 0:
            self.preflight()  # an empty answer is also how the CSV format reports an error
        return stats

    def _day_tables(self, day: date, zone: ZoneInfo) -> Iterator[tuple[datetime, pa.Table]]:
        """The day's readings as tables of at most about `window_rows`, each with the end of
        its window.

        A day not counted yet is first asked for whole, up to one reading more than
        `window_rows`: a day that fits, as a household's does, costs that one query and no
        count. A larger day is counted (`expected_rows`, which counts its neighbours too) and
        fetched window by window, so memory is bounded by the window, not the day.
        """
        start, end = day_window_utc(day, zone)
        if day not in self._counts:
            whole = self.window_table(start, end, limit=self.window_rows + 1)
            if whole.num_rows <= self.window_rows:
                yield end, whole
                return
            del whole
        for w_start, w_end in time_windows(
            start, end, self.expected_rows(day, zone), self.window_rows
        ):
            yield w_end, self.window_table(w_start, w_end)


_shared: dict[tuple[InfluxSettings, int, bool], InfluxSource] = {}


def shared_source(
    settings: InfluxSettings, window_rows: int, compress_answers: bool
) -> InfluxSource:
    """One source per settings in a process: its connection and its day counts serve every day
    of a backfill."""
    key = (settings, window_rows, compress_answers)
    if key not in _shared:
        _shared[key] = InfluxSource(settings, window_rows, compress_answers)
    return _shared[key]


def _error_of(content: bytes) -> str:
    """The server's error message: the `error` of a JSON answer, else the answer itself."""
    try:
        return str(json.loads(content)["error"])
    except (ValueError, KeyError, TypeError):
        return content.decode(errors="replace").strip()[:200]


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
