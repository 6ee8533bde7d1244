"""The raw table is defined once (pipeline/schema.py): dbt's source documents exactly that table.
Marker rows are written many to a statement, replacing a day's earlier marker."""

from __future__ import annotations

from datetime import date, timedelta

import duckdb
import yaml
from conftest import REPO

from pipeline.database import ROWS_PER_INSERT
from pipeline.markers import MarkerRow, marker_ids, markers_in, write_markers
from pipeline.schema import MARKER_TABLE, RAW_COLUMNS, RAW_TABLE, SCHEMA_SQL

SOURCES = REPO / "dbt" / "models" / "staging" / "_sources.yml"


def documented_columns() -> list[tuple[str, str]]:
    (source,) = yaml.safe_load(SOURCES.read_text())["sources"]
    (table,) = [t for t in source["tables"] if t["name"] == RAW_TABLE]
    return [(c["name"], c["data_type"].upper()) for c in table["columns"]]


def test_dbt_source_documents_the_raw_table_as_created() -> None:
    with duckdb.connect() as con:
        con.execute(SCHEMA_SQL)
        created = con.execute(
            "select column_name, data_type from information_schema.columns "
            "where table_name = ? order by ordinal_position",
            [RAW_TABLE],
        ).fetchall()
    assert created == documented_columns()
    assert [name for name, _ in created] == list(RAW_COLUMNS)


def test_markers_are_written_many_to_a_statement_and_replace_earlier_ones() -> None:
    days = [date(2020, 1, 1) + timedelta(days=n) for n in range(2 * ROWS_PER_INSERT + 1)]
    ids = marker_ids("DuckLoadDay", days)
    with duckdb.connect() as con:
        con.execute(SCHEMA_SQL)
        write_markers(con, [MarkerRow(ids[d], RAW_TABLE, d, 1, "old") for d in days[:2]])
        write_markers(
            con, [MarkerRow(ids[d], RAW_TABLE, d, n, f"fp{n}") for n, d in enumerate(days)]
        )
        assert markers_in(con, "DuckLoadDay(") == {ids[d]: f"fp{n}" for n, d in enumerate(days)}
        rows = con.execute(f"select sum(row_count), count(*) from {MARKER_TABLE}").fetchall()
    assert rows == [(sum(range(len(days))), len(days))]
