"""Landing data to the canonical `raw_meter_readings` layout (design.md section 3).

The canonical file has typed columns in the raw table's order (`schema.RAW_COLUMNS`), the local
wall clock, the default source, NULL for what was not sent, one row per (source, ts_utc), sorted.
`CanonicalWriter` writes it one of two ways, chosen per day:

- In memory with Arrow, for a day that fits in one row group (`[storage]
  parquet_row_group_size`; a meter read every second makes 86,400 readings a day) whose
  readings all carry a source, one per (source, ts_utc), as InfluxDB answers: the landing is
  sorted, the two columns are added, the file is written. It takes about a third of the DuckDB
  statement's time, and opens no DuckDB instance. Arrow reads the system's time-zone database
  (Debian's `tzdata`); where that lacks the zone, DuckDB (which carries its own) writes every day.
- One DuckDB statement otherwise: it applies the default source and the deduplication rule
  below, and streams the landing, spilling to disk past its memory limit, so a day of 100
  meters stays within a bounded footprint.

Both give the same rows (tests/test_transform.py compares them).
"""

from __future__ import annotations

import functools
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from types import TracebackType

import duckdb
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from contracts.influx import SOURCE_TAG
from contracts.message import MEASUREMENT_FIELDS
from pipeline.partitions import PartitionTarget

CANONICAL_SQL = """
copy (
    with landing as (
        select * from landing_rows
    ),

    typed as (
        select
            "time"::timestamptz as ts_utc,
            coalesce("source", $source_default) as source,
            "source" is null as source_defaulted,
            instant_power_w,
            energy_import_kwh,
            energy_export_kwh
        from landing
    ),

    deduplicated as (
        -- An untagged reading and one tagged with the default source at the same instant are
        -- the same point once the default is applied: keep the tagged one.
        select *
        from typed
        qualify row_number() over (
            partition by source, ts_utc
            order by source_defaulted, instant_power_w, energy_import_kwh, energy_export_kwh
        ) = 1
    )

    select
        ts_utc,
        timezone($tz, ts_utc) as ts_jst,
        source,
        instant_power_w,
        energy_import_kwh,
        energy_export_kwh,
        $ingested_at::timestamptz as ingested_at
    from deduplicated
    order by source, ts_utc
) to '{target}' (format parquet, compression '{compression}', row_group_size {row_group_size})
"""

UTC_MICROS = pa.timestamp("us", tz="UTC")


@dataclass(frozen=True)
class CanonicalStats:
    rows: int
    sources: int
    built_from: str  # the fingerprint of the landing it was made from


@dataclass
class CanonicalWriter:
    """Writes the canonical files of a day or a batch of days.

    DuckDB is opened for the first day that needs it, and then serves the rest of the batch:
    opening one costs as much as transforming a small day.
    """

    tz: str
    source_default: str
    compression: str
    row_group_size: int
    memory_limit: str
    _con: duckdb.DuckDBPyConnection | None = field(default=None, init=False, repr=False)

    def __enter__(self) -> CanonicalWriter:
        return self

    def __exit__(
        self, kind: type[BaseException] | None, e: BaseException | None, tb: TracebackType | None
    ) -> None:
        if self._con is not None:
            self._con.close()
            self._con = None

    def write(self, landing: PartitionTarget, target: Path) -> CanonicalStats:
        """The canonical file of the landing partition, at `target`. The landing's manifest
        (a request on object storage) is read once, for the rows, the time and `built_from`."""
        manifest = landing.manifest()
        ingested_at = datetime.fromisoformat(manifest["extracted_at"])
        if manifest["rows"] <= self.row_group_size and arrow_knows_zone(self.tz):
            table = canonical_table(landing.read_table(), tz=self.tz, ingested_at=ingested_at)
            if table is not None:
                pq.write_table(
                    table,
                    target,
                    compression=arrow_codec(self.compression),
                    row_group_size=self.row_group_size,
                    use_dictionary=["source"],  # as the landing (InfluxSource.extract)
                )
                sources = pc.count_distinct(table["source"]).as_py()
                return CanonicalStats(table.num_rows, sources, manifest["fingerprint"])
        rows, sources = self._write_with_duckdb(landing, target, ingested_at)
        return CanonicalStats(rows, sources, manifest["fingerprint"])

    def _write_with_duckdb(
        self, landing: PartitionTarget, target: Path, ingested_at: datetime
    ) -> tuple[int, int]:
        """The file written by CANONICAL_SQL; its rows and sources, as written."""
        con = self._connection(spill_dir=target.parent.with_name(target.parent.name + ".spill"))
        sql = CANONICAL_SQL.format(
            target=str(target).replace("'", "''"),
            compression=self.compression,
            row_group_size=int(self.row_group_size),
        )
        with landing.rows(con, "landing_rows"):
            # Every result fetched to its end: the connection serves the batch's next day.
            con.execute(
                sql,
                {"source_default": self.source_default, "tz": self.tz, "ingested_at": ingested_at},
            ).fetchall()
        [(rows, sources)] = con.execute(
            "select count(*), count(distinct source) "
            "from read_parquet(?, hive_partitioning = false)",
            [str(target)],
        ).fetchall()
        return rows, sources

    def _connection(self, spill_dir: Path) -> duckdb.DuckDBPyConnection:
        """An in-memory DuckDB, spilling to `spill_dir` (beside a staging folder, which the
        partition's recovery removes) past the memory limit."""
        if self._con is None:
            self._con = duckdb.connect()
            self._con.execute(f"set memory_limit = '{self.memory_limit}'")
            self._con.execute(f"set temp_directory = '{spill_dir}'")
            self._con.execute("set threads = 2")
        return self._con


@functools.cache
def arrow_knows_zone(tz: str) -> bool:
    """Whether Arrow finds the time zone. It reads the system's database (Debian's `tzdata`),
    which a slim image may lack; DuckDB carries its own, and then writes every day."""
    try:
        epoch = _repeated(datetime(1970, 1, 1, tzinfo=UTC), 1)
        pc.local_timestamp(epoch.cast(pa.timestamp("us", tz=tz)))
    except pa.ArrowInvalid:
        return False
    return True


def canonical_table(landing: pa.Table, *, tz: str, ingested_at: datetime) -> pa.Table | None:
    """The canonical rows of a landing table, or None when CANONICAL_SQL has a choice to make:
    a reading without a source (it takes the default one) or two readings of one source at one
    instant (a rule keeps one)."""
    if landing[SOURCE_TAG].null_count:
        return None
    keys = pa.table({"ts_utc": landing["time"].cast(UTC_MICROS), "source": landing[SOURCE_TAG]})
    order = pc.sort_indices(keys, sort_keys=[("source", "ascending"), ("ts_utc", "ascending")])
    keys = keys.take(order)
    if _has_repeats(keys):
        return None
    ts_utc = keys["ts_utc"]
    return pa.table(
        {
            "ts_utc": ts_utc,
            "ts_jst": pc.local_timestamp(ts_utc.cast(pa.timestamp("us", tz=tz))),
            "source": keys["source"],
            **{name: landing[name].take(order) for name in MEASUREMENT_FIELDS},
            "ingested_at": _repeated(ingested_at, len(keys)),
        }
    )


def _repeated(instant: datetime, n: int) -> pa.Array:
    """`instant` n times, as UTC microseconds. Built from bytes: pa.scalar or pa.array would
    import pandas (0.2 s, a cold day's margin) to check what they were given."""
    micros = (instant - datetime(1970, 1, 1, tzinfo=UTC)) // timedelta(microseconds=1)
    return pa.Array.from_buffers(
        UTC_MICROS, n, [None, pa.py_buffer(micros.to_bytes(8, "little", signed=True) * n)]
    )


def _has_repeats(keys: pa.Table) -> bool:
    """Whether two consecutive rows of a table sorted by (source, ts_utc) are the same key."""
    rest, previous = keys.slice(1), keys.slice(0, max(len(keys) - 1, 0))
    same = pc.and_(
        pc.equal(rest["ts_utc"], previous["ts_utc"]),
        pc.equal(rest["source"], previous["source"]),
    )
    return bool(pc.any(same).as_py())


def arrow_codec(codec: str) -> str:
    """Arrow's name for a `[storage] parquet_compression` codec (DuckDB's names)."""
    return "none" if codec == "uncompressed" else codec
