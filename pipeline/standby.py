"""Bringing the standby file of the `alternate` publish mode up to date with the live one.

The two files of that mode take turns being live; the standby is the one that was live a
publish ago (or a copy an interrupted publish left half changed). Before a publish changes it,
it is made equal to the live file by copying only what differs, so the cost of a publish
follows what changed, not the history:

- raw readings day by day: a day's rows and its DuckLoadDay marker change in one transaction
  (`load_days`), so the days whose raw markers differ between the two files are exactly the
  days whose rows differ; those days are copied, nothing else of the big table;
- every other table (the marker table, the dbt marts and seeds, the run's own tables) whole:
  they are a day's summary each, hundreds of times smaller than the readings, and dbt rebuilds
  them in ways a day list cannot follow (tables over everything, incremental windows);
- views by their definition, and objects the live file does not have are dropped.

A day is `partition_date` in the markers and `warehouse.day_rows` in the raw table.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager, suppress
from datetime import date
from pathlib import Path

import duckdb

from pipeline.database import scalar
from pipeline.schema import MARKER_TABLE, RAW_COLUMN_LIST, RAW_TABLE
from pipeline.warehouse import day_rows

# The live file as the standby's connection sees it while it catches up.
LIVE = "live_file"


def catch_up(con: duckdb.DuckDBPyConnection, live: Path) -> list[date]:
    """Make the database of `con` equal to the `live` file, in one transaction; the raw days
    it copied."""
    with _attached(con, live) as here:
        con.execute("begin transaction")
        try:
            by_day = _days_comparable(con, here)
            days = differing_days(con, here) if by_day else []
            for day in days:
                _copy_day(con, here, day)
            for schema, table in _tables(con, LIVE):
                if not by_day or (schema, table) != ("main", RAW_TABLE):
                    _copy_table(con, here, schema, table)
            _drop_missing(con, here)
            _copy_views(con, here)
            con.execute("commit")
        except BaseException:
            with suppress(duckdb.Error):  # a failed commit has already ended the transaction
                con.execute("rollback")
            raise
    return days


def changed_days(con: duckdb.DuckDBPyConnection, live: Path) -> list[date]:
    """The raw days the database of `con` holds differently from the `live` file."""
    with _attached(con, live) as here:
        return differing_days(con, here) if _days_comparable(con, here) else []


@contextmanager
def _attached(con: duckdb.DuckDBPyConnection, live: Path) -> Iterator[str]:
    """The live file attached read-only as LIVE; yields the name of `con`'s own database."""
    here = scalar(con, "select current_database()")
    con.execute(f"attach '{live}' as {LIVE} (read_only)")
    try:
        yield here
    finally:
        con.execute(f"detach {LIVE}")


def _days_comparable(con: duckdb.DuckDBPyConnection, here: str) -> bool:
    """Both files have the raw and marker tables (a database a test made may not)."""
    return all(
        ("main", table) in _tables(con, database)
        for table in (RAW_TABLE, MARKER_TABLE)
        for database in (here, LIVE)
    )


def differing_days(con: duckdb.DuckDBPyConnection, here: str) -> list[date]:
    """Days whose raw markers differ between database `here` and the attached live file."""
    markers = (
        'select update_id, partition_date, row_count, fingerprint, inserted from "{db}".main.'
        f"{MARKER_TABLE} where target_table = '{RAW_TABLE}'"
    )
    mine, live = markers.format(db=here), markers.format(db=LIVE)
    rows = con.execute(
        f"select distinct partition_date from (({mine} except {live}) "
        f"union all ({live} except {mine})) order by 1"
    ).fetchall()
    return [day for (day,) in rows]


def _copy_day(con: duckdb.DuckDBPyConnection, here: str, day: date) -> None:
    where, params = day_rows(day)
    con.execute(f'delete from "{here}".main.{RAW_TABLE} where {where}', params)
    con.execute(
        f'insert into "{here}".main.{RAW_TABLE} ({RAW_COLUMN_LIST}) '
        f"select {RAW_COLUMN_LIST} from {LIVE}.main.{RAW_TABLE} where {where}",
        params,
    )


def _copy_table(con: duckdb.DuckDBPyConnection, here: str, schema: str, table: str) -> None:
    """Make a table equal to the live one, rewriting only what differs: the dates that differ
    in a table by `date_jst` (the incremental marts), else the whole table if it differs at
    all (the marker rows keep their primary key); a table defined differently is made anew."""
    name, mine = f'"{schema}"."{table}"', f'"{here}"."{schema}"."{table}"'
    con.execute(f'create schema if not exists "{here}"."{schema}"')
    columns = _columns(con, here, schema, table)
    if columns != _columns(con, LIVE, schema, table):
        con.execute(f"drop table if exists {mine}")
        con.execute(f"drop view if exists {mine}")
        con.execute(f"create table {mine} as select * from {LIVE}.{name}")
    elif ("date_jst", "DATE") in columns and None not in (
        dates := _differing(con, mine, f"{LIVE}.{name}", by="date_jst")
    ):
        if dates:
            con.execute(f"delete from {mine} where date_jst in (select unnest(?))", [dates])
            con.execute(
                f"insert into {mine} select * from {LIVE}.{name} "
                "where date_jst in (select unnest(?))",
                [dates],
            )
    elif _differing(con, mine, f"{LIVE}.{name}", by="null"):
        con.execute(f"delete from {mine}")
        con.execute(f"insert into {mine} select * from {LIVE}.{name}")


def _differing(con: duckdb.DuckDBPyConnection, mine: str, live: str, *, by: str) -> list:
    """The values of `by` whose rows differ between two tables of the same columns, compared
    by a sum of row hashes (a multiset digest: reading both is far cheaper than rewriting)."""
    digest = (
        "select {by} as k, count(*) as n, sum(hash(t)::hugeint) as h from {table} as t group by 1"
    )
    rows = con.execute(
        f"select distinct k from (({digest.format(by=by, table=mine)}) "
        f"except ({digest.format(by=by, table=live)}) "
        f"union all (({digest.format(by=by, table=live)}) "
        f"except ({digest.format(by=by, table=mine)})))"
    ).fetchall()
    return [k for (k,) in rows]


def _drop_missing(con: duckdb.DuckDBPyConnection, here: str) -> None:
    """Tables and views an interrupted publish made here that the live file does not have."""
    for kind, listing in (("table", _tables), ("view", _views)):
        there = {(schema, name) for schema, name, *_ in listing(con, LIVE)}
        for schema, name, *_ in listing(con, here):
            if (schema, name) not in there:
                con.execute(f'drop {kind} if exists "{here}"."{schema}"."{name}"')


def _copy_views(con: duckdb.DuckDBPyConnection, here: str) -> None:
    """Each live view made again from its definition, which names tables without a file."""
    for schema, view, sql in _views(con, LIVE):
        con.execute(f'create schema if not exists "{here}"."{schema}"')
        con.execute(f'drop view if exists "{here}"."{schema}"."{view}"')
        con.execute(f'use "{here}"."{schema}"')
        try:
            con.execute(sql)
        finally:
            con.execute(f'use "{here}".main')


def _tables(con: duckdb.DuckDBPyConnection, database: str) -> list[tuple[str, str]]:
    return con.execute(
        "select schema_name, table_name from duckdb_tables() where database_name = ? "
        "and not temporary order by all",
        [database],
    ).fetchall()


def _views(con: duckdb.DuckDBPyConnection, database: str) -> list[tuple[str, str, str]]:
    return con.execute(
        "select schema_name, view_name, sql from duckdb_views() where database_name = ? "
        "and not internal and not temporary order by all",
        [database],
    ).fetchall()


def _columns(con: duckdb.DuckDBPyConnection, database: str, schema: str, table: str) -> list:
    return con.execute(
        "select column_name, data_type from duckdb_columns() where database_name = ? "
        "and schema_name = ? and table_name = ? order by column_index",
        [database, schema, table],
    ).fetchall()
