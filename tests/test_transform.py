"""The canonical transform's two ways (Arrow in memory, one DuckDB statement) give the same
rows."""

from __future__ import annotations

from datetime import UTC, date, datetime, timedelta
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from pipeline import transform
from pipeline.extract import LANDING_SCHEMA
from pipeline.partitions import LocalDataset, PartitionTarget
from pipeline.transform import CanonicalWriter, arrow_knows_zone

DAY = date(2025, 3, 30)  # Europe/Berlin and America/... keep their clocks apart this month
EXTRACTED_AT = datetime(2025, 4, 1, 2, 3, 4, 567890, tzinfo=UTC)
START = datetime(2025, 3, 29, 22, 0, tzinfo=UTC)


def at(minutes: float) -> datetime:
    return START + timedelta(minutes=minutes)


def landing(folder: Path, rows: list[tuple]) -> PartitionTarget:
    """A landing partition of (time, source, instant_power_w, import, export) rows."""
    target = PartitionTarget(LocalDataset(folder), DAY)
    table = pa.Table.from_pylist(
        [dict(zip(LANDING_SCHEMA.names, row, strict=True)) for row in rows], LANDING_SCHEMA
    )
    with target.writing() as staged:
        pq.write_table(table, staged.folder / "part-0.parquet")
        staged.manifest.update(rows=len(rows), extracted_at=EXTRACTED_AT.isoformat())
    return target


def canonical(
    partition: PartitionTarget, out: Path, tz: str, row_group_size: int
) -> pq.ParquetFile:
    with CanonicalWriter(
        tz=tz,
        source_default="meter1",
        compression="zstd",
        row_group_size=row_group_size,
        memory_limit="256MB",
    ) as writer:
        writer.write(partition, out)
    return pq.ParquetFile(out)


ONE_METER = [(at(m * 10), "meter1", 100.0 + m, 0.1 * m, None) for m in range(200)]
CASES = {
    "one meter across a DST change": (ONE_METER, "Europe/Berlin"),
    "two meters interleaved by time": (
        [(at(m), s, float(m), None, 0.5) for m in range(0, 120, 5) for s in ("b", "a")],
        "America/New_York",
    ),
    "no readings": ([], "Asia/Tokyo"),
}


@pytest.mark.parametrize("case", CASES)
def test_a_day_already_one_reading_per_instant_is_written_by_arrow_as_duckdb_would(
    tmp_path, case: str
) -> None:
    rows, tz = CASES[case]
    partition = landing(tmp_path / "landing", rows)
    in_memory = canonical(partition, tmp_path / "arrow.parquet", tz, row_group_size=10_000)
    # A day larger than a row group streams through DuckDB.
    streamed = canonical(partition, tmp_path / "duckdb.parquet", tz, row_group_size=1)
    assert in_memory.metadata.created_by.startswith("parquet-cpp-arrow")
    assert streamed.metadata.created_by.startswith("DuckDB") or not rows
    written, expected = in_memory.read(), streamed.read()
    # Same names and types (DuckDB marks a column without NULLs required, which is no contract).
    assert list(zip(written.schema.names, written.schema.types, strict=True)) == list(
        zip(expected.schema.names, expected.schema.types, strict=True)
    )
    assert written.equals(expected.cast(written.schema))
    assert expected.num_rows == len(rows)


def test_readings_sharing_a_source_and_an_instant_go_through_duckdb(tmp_path) -> None:
    rows = [*ONE_METER[:3], (at(0), "meter1", 9.0, None, None)]
    written = canonical(landing(tmp_path / "landing", rows), tmp_path / "c.parquet", "UTC", 10_000)
    assert written.metadata.created_by.startswith("DuckDB")
    assert [(r["ts_utc"], r["instant_power_w"]) for r in written.read().to_pylist()] == [
        (at(0), 9.0),  # the rule keeps the reading that sorts first
        (at(10), 101.0),
        (at(20), 102.0),
    ]


def test_readings_without_a_source_go_through_duckdb_and_take_the_default(tmp_path) -> None:
    rows = [
        (at(1), None, 1.0, 2.0, 3.0),
        (at(2), "meter1", 4.0, None, None),
        (at(2), None, 5.0, None, None),  # meter1's instant once the default is applied
        (at(3), "x", 6.0, 7.0, 8.0),
    ]
    written = canonical(landing(tmp_path / "landing", rows), tmp_path / "c.parquet", "UTC", 10_000)
    assert written.metadata.created_by.startswith("DuckDB")
    table = written.read().to_pylist()
    assert [(r["source"], r["ts_utc"], r["instant_power_w"]) for r in table] == [
        ("meter1", at(1), 1.0),
        ("meter1", at(2), 4.0),  # the tagged reading is kept
        ("x", at(3), 6.0),
    ]
    assert {r["ingested_at"] for r in table} == {EXTRACTED_AT}


def test_a_zone_arrow_cannot_find_goes_through_duckdb(tmp_path, monkeypatch) -> None:
    assert arrow_knows_zone("Asia/Tokyo") and not arrow_knows_zone("Nowhere/Land")
    monkeypatch.setattr(transform, "arrow_knows_zone", lambda tz: False)  # no system tzdata
    written = canonical(
        landing(tmp_path / "landing", ONE_METER), tmp_path / "c.parquet", "UTC", 10_000
    )
    assert written.metadata.created_by.startswith("DuckDB")
    assert written.read().num_rows == len(ONE_METER)
