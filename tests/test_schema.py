"""The raw table is defined once (pipeline/schema.py): dbt's source documents exactly that table."""

from __future__ import annotations

import duckdb
import yaml
from conftest import REPO

from pipeline.schema import RAW_COLUMNS, RAW_TABLE, SCHEMA_SQL

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
