"""The warehouse's own tables: the raw readings and the marker rows, one definition for all.

The transform writes Parquet in `RAW_COLUMNS` order, the day load inserts by it, dbt's source
(`dbt/models/staging/_sources.yml`) documents it and the tests read it from here.
"""

from __future__ import annotations

from contracts.message import MEASUREMENT_FIELDS

RAW_TABLE = "raw_meter_readings"
MARKER_TABLE = "table_updates"

# Column -> DuckDB type; the measurements are the message contract's fields, in its order.
RAW_COLUMN_TYPES = {
    "ts_utc": "timestamptz not null",
    "ts_jst": "timestamp not null",
    "source": "varchar not null",
    **dict.fromkeys(MEASUREMENT_FIELDS, "double"),
    "ingested_at": "timestamptz not null",
}
RAW_COLUMNS = tuple(RAW_COLUMN_TYPES)
RAW_COLUMN_LIST = ", ".join(RAW_COLUMNS)

_RAW_DDL = ",\n    ".join(f"{name} {kind}" for name, kind in RAW_COLUMN_TYPES.items())

SCHEMA_SQL = f"""
create table if not exists {RAW_TABLE} (
    {_RAW_DDL}
);
-- Luigi's marker-table convention (luigi.contrib.rdbms), extended with what the pipeline needs.
create table if not exists {MARKER_TABLE} (
    update_id varchar primary key,
    target_table varchar not null,
    inserted timestamptz not null,
    partition_date date,
    row_count bigint,
    fingerprint varchar
);
"""
