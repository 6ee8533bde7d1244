"""Marker rows: which day each task loaded or built, and from what (its input's fingerprint).

One row per task and day in `table_updates` (Luigi's marker-table convention). A task's day is
current while its marker's fingerprint matches the fingerprint of what it would be built from.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable, Sequence
from datetime import date, timedelta
from pathlib import Path
from typing import NamedTuple

import duckdb
import luigi

from pipeline.database import connect, has_table, insert_values
from pipeline.errors import damage_explained
from pipeline.schema import MARKER_TABLE


def marker_ids(task_family: str, days: Iterable[date]) -> dict[date, str]:
    return {day: f"{task_family}(date={day.isoformat()})" for day in days}


def read_markers(live: Path, prefix: str) -> dict[str, str | None]:
    """update_id -> fingerprint of every marker whose id starts with `prefix`, in one query."""
    if not live.exists():
        return {}
    with connect(live, read_only=True) as con, damage_explained(live):
        return markers_in(con, prefix) if has_table(con, MARKER_TABLE) else {}


def markers_in(con: duckdb.DuckDBPyConnection, prefix: str) -> dict[str, str | None]:
    rows = con.execute(
        f"select update_id, fingerprint from {MARKER_TABLE} where starts_with(update_id, ?)",
        [prefix],
    ).fetchall()
    return dict(rows)


class MarkerRow(NamedTuple):
    update_id: str
    target_table: str
    partition_date: date | None
    row_count: int | None
    fingerprint: str | None


def write_markers(con: duckdb.DuckDBPyConnection, rows: Sequence[MarkerRow]) -> None:
    """Insert or replace marker rows, all in one statement (a batch's days at once)."""
    insert_values(
        con,
        f"insert or replace into {MARKER_TABLE} "
        "(update_id, target_table, inserted, partition_date, row_count, fingerprint) values",
        "(?, ?, now(), ?, ?, ?)",
        rows,
    )


def write_marker(
    con: duckdb.DuckDBPyConnection,
    update_id: str,
    target_table: str,
    *,
    partition_date: date | None,
    row_count: int | None,
    fingerprint: str | None,
) -> None:
    write_markers(con, [MarkerRow(update_id, target_table, partition_date, row_count, fingerprint)])


class MarkerTarget(luigi.Target):
    """A marker row in the live database, current while its fingerprint matches the input's."""

    def __init__(self, live: Path, update_id: str, fingerprint: str | None) -> None:
        self.live = live
        self.update_id = update_id
        self.fingerprint = fingerprint

    def exists(self) -> bool:
        if self.fingerprint is None:  # the input itself is missing
            return False
        return read_markers(self.live, self.update_id).get(self.update_id) == self.fingerprint


def neighbourhood_fingerprint(
    loads: dict[str, str | None], load_family: str, day: date
) -> str | None:
    """The loads a day's energy depends on: the day before, the day, the day after."""
    ids = marker_ids(load_family, [day - timedelta(days=1), day, day + timedelta(days=1)])
    if loads.get(ids[day]) is None:
        return None
    parts = [loads.get(i) or "-" for i in ids.values()]
    return hashlib.sha256("|".join(parts).encode()).hexdigest()[:32]


def mark_dbt_days(
    con: duckdb.DuckDBPyConnection, family: str, load_family: str, days: list[date]
) -> int:
    """Mark every day dbt rebuilt: the batch and its neighbours (whose midnight split changed)."""
    loads = markers_in(con, f"{load_family}(")
    window = [days[0] - timedelta(days=1), *days, days[-1] + timedelta(days=1)]
    rows = [
        MarkerRow(update_id, "fct_daily_energy", day, None, fingerprint)
        for day, update_id in marker_ids(family, window).items()
        if (fingerprint := neighbourhood_fingerprint(loads, load_family, day)) is not None
    ]
    write_markers(con, rows)
    return len(rows)
