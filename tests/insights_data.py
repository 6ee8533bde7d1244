"""Meter readings built from a power profile, and dbt projects with the test's own seeds.

Shared by the cost and findings tests; the dbt model tests use its raw table too. A profile
gives the power (kW) drawn during each 15-minute step of local time; readings every 15 minutes
carry the cumulative kWh and the power of the step they start, so every half hour's energy is
known exactly.
"""

from __future__ import annotations

import shutil
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from zoneinfo import ZoneInfo

import duckdb

from pipeline.dbt_runner import DBT_PROJECT_DIR
from pipeline.schema import RAW_COLUMNS, RAW_TABLE, SCHEMA_SQL

TOKYO = ZoneInfo("Asia/Tokyo")
STEP = timedelta(minutes=15)

Profile = Callable[[datetime], float]  # local time of a 15-minute step -> kW drawn in it


@dataclass(frozen=True)
class Reading:
    at: datetime  # aware, Asia/Tokyo
    source: str
    power_w: float | None
    import_kwh: float
    export_kwh: float | None


def local_midnight(day: date) -> datetime:
    return datetime.combine(day, datetime.min.time(), tzinfo=TOKYO)


def meter(
    source: str,
    first: date,
    last: date,
    profile: Profile,
    *,
    export_kw: float | None = None,
    peaks: dict[datetime, float] | None = None,
    skip: Callable[[datetime], bool] = lambda at: False,
    with_power: bool = True,
) -> list[Reading]:
    """Readings every 15 minutes from `first` 00:00 to the midnight closing `last`.

    `peaks` replaces the power read at given instants (a short spike that costs no energy);
    `skip` leaves readings out (a gap); without `with_power` no power is read at all.
    """
    readings, imported, exported = [], 5000.0, 100.0 if export_kw is not None else None
    at, end = local_midnight(first), local_midnight(last + timedelta(days=1))
    while at <= end:
        kw = profile(at)
        if not skip(at):
            power = (peaks or {}).get(at, kw * 1000) if with_power else None
            readings.append(Reading(at, source, power, round(imported, 9), exported))
        imported += kw * 0.25
        if exported is not None:
            exported = round(exported + export_kw * 0.25, 9)
        at += STEP
    return readings


def new_database(path: Path) -> Path:
    """A DuckDB file with the pipeline's own (empty) raw table."""
    with duckdb.connect(str(path)) as con:
        con.execute(SCHEMA_SQL)
    return path


def insert_rows(path: Path, rows: list[tuple]) -> Path:
    """Rows of the raw table's columns, in its order, as they are."""
    placeholders = ", ".join("?" * len(RAW_COLUMNS))
    with duckdb.connect(str(path)) as con:
        con.executemany(f"insert into {RAW_TABLE} values ({placeholders})", rows)
    return path


def load(path: Path, readings: Iterable[Reading], days: Iterable[date] | None = None) -> Path:
    """Insert the readings (of the given local days only, like DuckLoadDay replaces a day)."""
    wanted = set(days) if days is not None else None
    ingested = datetime(2026, 1, 1, tzinfo=UTC)
    rows = [
        (
            r.at.astimezone(UTC),
            r.at.replace(tzinfo=None),
            r.source,
            r.power_w,
            r.import_kwh,
            r.export_kwh,
            ingested,
        )
        for r in readings
        if wanted is None or r.at.date() in wanted
    ]
    if wanted is not None:
        with duckdb.connect(str(path)) as con:
            for day in wanted:
                con.execute(f"delete from {RAW_TABLE} where cast(ts_jst as date) = ?", [day])
    return insert_rows(path, rows)


def project_with_seeds(folder: Path, seeds: dict[str, str], append: bool = False) -> Path:
    """A copy of the repository's dbt project whose named seed files are replaced (or, with
    `append`, extended) by the given CSV text."""
    project = folder / "dbt"
    shutil.copytree(
        DBT_PROJECT_DIR, project, ignore=shutil.ignore_patterns("target", "logs", "dbt_packages")
    )
    write_seeds(project, seeds, append=append)
    return project


def write_seeds(project: Path, seeds: dict[str, str], append: bool = False) -> None:
    for name, text in seeds.items():
        path = project / "seeds" / f"{name}.csv"
        if append:
            path.write_text(path.read_text() + text.strip() + "\n")
        else:
            path.write_text(text.strip() + "\n")
