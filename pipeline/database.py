"""Opening DuckDB files, with the failures a person can act on said in one line."""

from __future__ import annotations

from pathlib import Path

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


def has_table(con: duckdb.DuckDBPyConnection, name: str) -> bool:
    return bool(
        con.execute(
            "select count(*) from information_schema.tables where table_name = ?", [name]
        ).fetchone()[0]
    )
