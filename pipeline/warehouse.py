"""The warehouse's contents: a day's readings loaded with its marker, and the whole checked.

How a changed database becomes the live one is `publishing.py`'s job.
"""

from __future__ import annotations

from collections.abc import Callable
from contextlib import suppress
from dataclasses import dataclass
from datetime import date, datetime

import duckdb

from pipeline.database import scalar
from pipeline.errors import PipelineError
from pipeline.failpoints import failpoint
from pipeline.markers import MarkerRow, write_markers
from pipeline.partitions import PartitionTarget, rows_of
from pipeline.schema import MARKER_TABLE, RAW_COLUMN_LIST, RAW_TABLE


@dataclass(frozen=True)
class DayLoad:
    """One day to load: its Parquet partition, its UTC window and its marker."""

    partition: PartitionTarget
    window_utc: tuple[datetime, datetime]
    update_id: str
    fingerprint: str


def load_days(
    con: duckdb.DuckDBPyConnection, loads: list[DayLoad], loaded: Callable[[int], None]
) -> int:
    """Replace the days' readings from their partitions and mark each, in one transaction;
    `loaded(rows)` once they are in, before the commit. The total of rows loaded.

    The partitions (of one dataset) are read where they are (a local folder, or object storage
    as Arrow batches) by one INSERT, and marked by one statement: a statement per day costs as
    much as loading a small day, and a batch is published (or not) as a whole anyway.
    """
    con.execute("begin transaction")
    try:
        for load in loads:
            con.execute(f"delete from {RAW_TABLE} where ts_utc >= ? and ts_utc < ?", _window(load))
        with rows_of([load.partition for load in loads], con, "partition_rows") as rows:
            con.execute(
                f"insert into {RAW_TABLE} ({RAW_COLUMN_LIST}) select {RAW_COLUMN_LIST} from {rows}"
            )
        markers = [_marker(con, load) for load in loads]
        total = sum(marker.row_count or 0 for marker in markers)
        loaded(total)
        write_markers(con, markers)
        failpoint("load.before_commit")
        con.execute("commit")
    except BaseException:
        # A commit that failed (e.g. disk full) has already ended the transaction: the
        # rollback's own error would hide the cause.
        with suppress(duckdb.Error):
            con.execute("rollback")
        raise
    return total


def _window(load: DayLoad) -> list[datetime]:
    return list(load.window_utc)


def _marker(con: duckdb.DuckDBPyConnection, load: DayLoad) -> MarkerRow:
    """The day's marker, its row count read from the table as loaded."""
    query = f"select count(*) from {RAW_TABLE} where ts_utc >= ? and ts_utc < ?"
    rows = scalar(con, query, _window(load))
    return MarkerRow(load.update_id, RAW_TABLE, load.partition.day, rows, load.fingerprint)


def verify(con: duckdb.DuckDBPyConnection) -> None:
    """Read every column of every table, and check the raw table against its markers.

    DuckDB has no `PRAGMA integrity_check`; reading everything exercises every block's checksum.
    """
    for table in _tables(con):
        _read_whole(con, f'"{table}"')
    _check_total(con)


def verify_days(con: duckdb.DuckDBPyConnection, days: list[date]) -> None:
    """`verify` for a publish that changed only `days` of the raw readings: those days read
    whole and counted against their markers, every other table read whole, the raw total
    checked against all markers. The other days were verified when they were published."""
    for table in _tables(con):
        if table != RAW_TABLE:
            _read_whole(con, f'"{table}"')
    marked = dict(
        con.execute(
            f"select partition_date, row_count from {MARKER_TABLE} where target_table = ?",
            [RAW_TABLE],
        ).fetchall()
    )
    for day in days:
        where, params = day_rows(day)
        # The hashes read every column of the day (each block's checksum); the count is checked.
        [(rows, *_hashes)] = con.execute(
            f"select count(*), bit_xor(hash(columns(*))) from {RAW_TABLE} where {where}", params
        ).fetchall()
        if rows != marked.get(day, 0):
            raise PipelineError(
                f"verification failed: {RAW_TABLE} has {rows} rows on {day}, its marker says "
                f"{marked.get(day, 0)}; the new database was not published"
            )
    _check_total(con)


def day_rows(day: date) -> tuple[str, list]:
    """The filter on the raw table for one local day, and its parameters: `ts_jst` is the wall
    clock in the pipeline time zone, so its date is the day `load_days` loaded it as (and its
    zone maps keep the filter from reading the history)."""
    return "ts_jst >= ?::timestamp and ts_jst < ?::timestamp + interval 1 day", [day, day]


def _tables(con: duckdb.DuckDBPyConnection) -> list[str]:
    return [
        t
        for (t,) in con.execute(
            "select table_name from information_schema.tables where table_type = 'BASE TABLE' "
            "and table_catalog = current_database()"
        ).fetchall()
    ]


def _read_whole(con: duckdb.DuckDBPyConnection, relation: str) -> None:
    con.execute(f"select count(*), bit_xor(hash(columns(*))) from {relation}").fetchall()


def _check_total(con: duckdb.DuckDBPyConnection) -> None:
    expected = scalar(
        con,
        f"select coalesce(sum(row_count), 0) from {MARKER_TABLE} where target_table = ?",
        [RAW_TABLE],
    )
    actual = scalar(con, f"select count(*) from {RAW_TABLE}")
    if expected != actual:
        raise PipelineError(
            f"verification failed: {RAW_TABLE} has {actual} rows, its markers say {expected}; "
            "the new database was not published"
        )
