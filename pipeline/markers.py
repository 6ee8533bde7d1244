"""Marker rows: which day each task loaded or built, and from what (its input's fingerprint).

One row per task and day in `table_updates` (Luigi's marker-table convention). A task's day is
current while its marker's fingerprint matches the fingerprint of what it would be built from.
"""

from __future__ import annotations

import hashlib
import os
import time
from collections.abc import Iterable, Mapping, Sequence
from datetime import date, timedelta
from pathlib import Path
from types import MappingProxyType
from typing import NamedTuple

import duckdb
import luigi

from pipeline.database import connect, has_table, insert_values, wal_path
from pipeline.errors import damage_explained
from pipeline.schema import MARKER_TABLE


def marker_ids(task_family: str, days: Iterable[date]) -> dict[date, str]:
    return {day: f"{task_family}(date={day.isoformat()})" for day in days}


def read_markers(live: Path, prefix: str) -> Mapping[str, str | None]:
    """update_id -> fingerprint of every marker whose id starts with `prefix` (read-only: the
    process shares it)."""
    return MappingProxyType(_file_markers(live).by_prefix(prefix))


# A file whose last change is this recent may change again within the same file-system clock
# tick, unseen by its modification time ("racily clean", as git calls it): it is read anew.
RACY_S = 1.0


class _FileMarkers(NamedTuple):
    """Every marker of one version of a DuckDB file, and their selections by prefix."""

    version: tuple[int, ...] | None
    markers: dict[str, str | None]
    by_prefixes: dict[str, dict[str, str | None]]

    def by_prefix(self, prefix: str) -> dict[str, str | None]:
        if prefix not in self.by_prefixes:
            self.by_prefixes[prefix] = {
                k: v for k, v in self.markers.items() if k.startswith(prefix)
            }
        return self.by_prefixes[prefix]


_read: dict[Path, _FileMarkers] = {}


def _file_markers(live: Path) -> _FileMarkers:
    """The file's markers, read once per version of it (a year's range asks for them per day,
    and opening the file costs more than the query). A publish replaces the file (another
    inode) or writes it or its WAL (other sizes and times): a new version, read again."""
    stats = _stats(live)
    version = tuple(n for st in stats for n in _state(st)) if stats else None
    kept = _read.get(live)
    if kept is not None and kept.version == version:
        return kept
    if version is None:
        return _FileMarkers(None, {}, {})
    with connect(live, read_only=True) as con, damage_explained(live):
        markers = markers_in(con, "") if has_table(con, MARKER_TABLE) else {}
    read = _FileMarkers(version, markers, {})
    last_change = max(max(st.st_mtime_ns, st.st_ctime_ns) for st in stats) / 1e9
    if time.time() - last_change >= RACY_S:
        _read[live] = read
    return read


def _stats(live: Path) -> list[os.stat_result]:
    """The file's and its WAL's (if any); none without the file."""
    stats = []
    for path in (live, wal_path(live)):
        try:
            stats.append(path.stat())
        except FileNotFoundError:
            break
    return stats


def _state(st: os.stat_result) -> tuple[int, ...]:
    return (st.st_dev, st.st_ino, st.st_size, st.st_mtime_ns, st.st_ctime_ns)


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


class MarkerTarget(luigi.Target):
    """A marker row in the live database, current while its fingerprint matches the input's."""

    def __init__(self, live: Path, update_id: str, fingerprint: str | None) -> None:
        self.live = live
        self.update_id = update_id
        self.fingerprint = fingerprint

    def exists(self) -> bool:
        if self.fingerprint is None:  # the input itself is missing
            return False
        return _file_markers(self.live).markers.get(self.update_id) == self.fingerprint


def neighbourhood_fingerprint(
    loads: Mapping[str, str | None], load_family: str, day: date
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
