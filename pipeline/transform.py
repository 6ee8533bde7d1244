"""Landing data to the canonical `raw_meter_readings` layout (design.md section 3).

One DuckDB statement reads the landing partition (local Parquet files, or Arrow batches from
object storage) and writes the canonical file: typed columns in the raw table's order
(`schema.RAW_COLUMNS`), the local wall clock, the default source, NULL for what was not sent,
one row per (source, ts_utc), sorted. DuckDB spills to disk past its memory limit, so a day of
100 meters stays within a bounded footprint.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from pathlib import Path

import duckdb

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


@dataclass(frozen=True)
class CanonicalStats:
    rows: int
    sources: int


def write_canonical(
    landing: PartitionTarget,
    target: Path,
    *,
    tz: str,
    source_default: str,
    ingested_at: datetime,
    compression: str,
    row_group_size: int,
    memory_limit: str,
    spill_dir: Path,
) -> CanonicalStats:
    with duckdb.connect() as con:
        con.execute(f"set memory_limit = '{memory_limit}'")
        con.execute(f"set temp_directory = '{spill_dir}'")
        con.execute("set threads = 2")
        sql = CANONICAL_SQL.format(
            target=str(target).replace("'", "''"),
            compression=compression,
            row_group_size=int(row_group_size),
        )
        with landing.rows(con, "landing_rows"):
            con.execute(
                sql, {"source_default": source_default, "tz": tz, "ingested_at": ingested_at}
            )
        rows, sources = con.execute(
            "select count(*), count(distinct source) "
            "from read_parquet(?, hive_partitioning = false)",
            [str(target)],
        ).fetchone()
    return CanonicalStats(rows=rows, sources=sources)
