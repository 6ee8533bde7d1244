"""Opening DuckDB files, with the failures a person can act on said in one line."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import duckdb

from pipeline.errors import PipelineError, damage_explained


def connect(path: Path, read_only: bool = False) -> duckdb.DuckDBPyConnection:
    try:
        with damage_explained(path):
            return duckdb.connect(str(path), read_only=read_only)
    except duckdb.IOException as e:
        if "lock" in str(e).lower():
            raise PipelineError(
                f"DuckDB file {path} is locked by another process; close it and rerun "
                f"({str(e).splitlines()[0]})"
            ) from None
        raise PipelineError(f"DuckDB file {path} cannot be opened: {e}") from None


def wal_path(path: Path) -> Path:
    """The write-ahead log DuckDB keeps beside a database file until it checkpoints."""
    return path.with_name(path.name + ".wal")


def scalar(con: duckdb.DuckDBPyConnection, sql: str, params: Sequence[object] = ()) -> Any:
    """The value of a query that returns one row of one column (an aggregate)."""
    ((value,),) = con.execute(sql, list(params)).fetchall()
    return value


def has_table(con: duckdb.DuckDBPyConnection, name: str) -> bool:
    return bool(
        scalar(con, "select count(*) from information_schema.tables where table_name = ?", [name])
    )


# Rows per statement of `insert_values`: a statement's parameters stay in the thousands.
ROWS_PER_INSERT = 500


def insert_values(
    con: duckdb.DuckDBPyConnection, insert: str, row: str, rows: Sequence[Sequence[object]]
) -> None:
    """`insert` (`insert into t (columns) values`) with one `row` template (`(?, ?, now())`) per
    row, many rows to a statement: DuckDB runs an executemany's statement once per row, about a
    millisecond each, and a statement of many rows takes a tenth of that per row."""
    for start in range(0, len(rows), ROWS_PER_INSERT):
        chunk = rows[start : start + ROWS_PER_INSERT]
        con.execute(f"{insert} {', '.join([row] * len(chunk))}", [v for r in chunk for v in r])
