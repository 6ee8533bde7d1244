"""The raw table is defined once (pipeline/schema.py): dbt's source documents exactly that table.
Marker rows are written many to a statement, replacing a day's earlier marker, and read once per
version of the file."""

from __future__ import annotations

import time
from datetime import date, timedelta

import duckdb
import yaml
from conftest import REPO

from pipeline import markers
from pipeline.database import ROWS_PER_INSERT, connect
from pipeline.markers import (
    MarkerRow,
    MarkerTarget,
    marker_ids,
    markers_in,
    read_markers,
    write_markers,
)
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


def test_markers_are_read_once_per_version_of_the_file(tmp_path, monkeypatch) -> None:
    live = tmp_path / "home_energy.duckdb"
    day = date(2025, 12, 17)
    update_id = marker_ids("DuckLoadDay", [day])[day]

    def mark(fingerprint: str) -> None:
        with duckdb.connect(str(live)) as con:
            con.execute(SCHEMA_SQL)
            write_markers(con, [MarkerRow(update_id, RAW_TABLE, day, 1, fingerprint)])

    opened = []
    monkeypatch.setattr(markers, "connect", lambda *a, **k: opened.append(1) or connect(*a, **k))
    target = MarkerTarget(live, update_id, "b")
    mark("a")
    assert not target.exists() and not target.exists()
    assert len(opened) == 2  # just written: racily clean, read every time
    time.sleep(markers.RACY_S)
    assert not target.exists() and not target.exists()
    assert len(opened) == 3  # read once, then kept
    mark("b")  # changed in place
    assert target.exists()
    live.rename(tmp_path / "old.duckdb")
    mark("c")  # replaced, as a publish does
    assert read_markers(live, "DuckLoadDay(") == {update_id: "c"}
