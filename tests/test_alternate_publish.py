"""The alternate publish mode: two files in turn, each publish copying only what changed.

The publishes are the pipeline's own (pipeline.publishing.Warehouse) on real DuckDB files. What
must hold: the file a publish makes is the database a full copy would have made (swap mode),
readers always find a whole database and never block a publish for long, and the file of one
publish ago is the way back.
"""

from __future__ import annotations

import itertools
import subprocess
import sys
import time
from datetime import date, timedelta
from pathlib import Path

import duckdb
import pytest

from gateway.warehouse_reader import WarehouseReader
from pipeline.errors import PipelineError
from pipeline.markers import MarkerRow, write_markers
from pipeline.publishing import Warehouse
from pipeline.schema import RAW_TABLE
from pipeline.warehouse import day_rows

FIRST = date(2025, 12, 1)


def publish_day(live: Path, mode: str, day: date, readings: int) -> None:
    """What DuckLoadDay then DbtBuild do to the file, reduced: a day replaced with its marker,
    a table over everything rebuilt, a view over it."""
    with Warehouse(live, mode, lock_timeout_s=30).writing() as con:
        where, params = day_rows(day)
        con.execute(f"delete from {RAW_TABLE} where {where}", params)
        con.execute(
            f"insert into {RAW_TABLE} select timezone('Asia/Tokyo', t), t, 'meter1', i, i / 10, "
            "null, now() from (select ?::timestamp + i * interval 1 minute as t, i "
            "from range(?) as r(i))",
            [day, readings],
        )
        write_markers(
            con,
            [MarkerRow(f"DuckLoadDay(date={day})", RAW_TABLE, day, readings, f"{day}/{readings}")],
        )
        # A mart by date_jst (copied by the dates that differ) and a table over everything.
        con.execute(
            "create or replace table daily as select cast(ts_jst as date) as date_jst, "
            f"count(*) as n from {RAW_TABLE} group by all"
        )
        con.execute(f"create or replace table total as select count(*) as n from {RAW_TABLE}")
        con.execute("create or replace view busy_days as select * from daily where n > 100")


# Columns that hold when a row was written, which differs between two writers of one day.
WRITTEN_AT = {RAW_TABLE: "ingested_at", "table_updates": "inserted"}


def contents(path: Path) -> dict[str, list]:
    """Every table's and view's rows, ordered, without the times they were written."""
    with duckdb.connect(str(path), read_only=True) as con:
        names = [
            name
            for (name,) in con.execute(
                "select table_name from information_schema.tables order by 1"
            ).fetchall()
        ]
        return {
            name: con.execute(
                f"select * exclude ({WRITTEN_AT[name]}) from {name} order by all"
                if name in WRITTEN_AT
                else f"select * from {name} order by all"
            ).fetchall()
            for name in names
        }


def links(live: Path) -> tuple[str, str | None]:
    prev = live.with_name("home_energy.prev.duckdb")
    return live.readlink().name, prev.readlink().name if prev.is_symlink() else None


# (day offset, readings): new days, a day replaced with more and with fewer, a day back in time
HISTORY = [(0, 50), (1, 200), (2, 300), (1, 250), (0, 40), (3, 10), (2, 300)]


def test_each_publish_equals_a_full_copy_and_prev_is_one_behind(tmp_path: Path) -> None:
    alternate, swap = tmp_path / "alternate" / "home_energy.duckdb", tmp_path / "swap" / "x.duckdb"
    seen = []
    for offset, readings in HISTORY:
        day = FIRST + timedelta(days=offset)
        before = contents(swap) if swap.exists() else None
        publish_day(alternate, "alternate", day, readings)
        publish_day(swap, "swap", day, readings)
        assert contents(alternate) == contents(swap)
        live, prev = links(alternate)
        seen.append(live)
        if before is not None:
            assert contents(alternate.with_name("home_energy.prev.duckdb")) == before
            assert prev != live
    assert set(seen) == {"home_energy.a.duckdb", "home_energy.b.duckdb"}
    assert all(one != other for one, other in itertools.pairwise(seen))  # in turn


def test_a_plain_live_file_becomes_the_first_of_the_two(tmp_path: Path) -> None:
    live = tmp_path / "home_energy.duckdb"
    publish_day(live, "swap", FIRST, 100)
    publish_day(live, "alternate", FIRST + timedelta(days=1), 100)
    assert links(live) == ("home_energy.b.duckdb", "home_energy.a.duckdb")
    assert contents(live)["daily"] == [(FIRST, 100), (FIRST + timedelta(days=1), 100)]
    publish_day(live, "swap", FIRST + timedelta(days=2), 100)  # and back: a plain file again
    assert not live.is_symlink()
    assert len(contents(live)["daily"]) == 3


def test_restore_prev_points_back_and_the_next_publish_copies(tmp_path: Path) -> None:
    live = tmp_path / "home_energy.duckdb"
    for offset in range(3):
        publish_day(live, "alternate", FIRST + timedelta(days=offset), 100)
    damaged_name = links(live)[0]
    aside = Warehouse(live, "alternate").restore_prev()
    assert aside is not None and aside.name.startswith("home_energy.damaged-")
    assert not (tmp_path / damaged_name).exists()
    assert len(contents(aside)["daily"]) == 3  # moved aside, never deleted
    assert len(contents(live)["daily"]) == 2
    restored, prev = links(live)
    assert prev is None  # no second way back until the next publish
    with pytest.raises(PipelineError, match=r"no home_energy\.prev\.duckdb to restore"):
        Warehouse(live, "alternate").restore_prev()
    publish_day(live, "alternate", FIRST + timedelta(days=2), 100)  # a fresh copy, once
    assert links(live) == (damaged_name, restored)
    assert len(contents(live)["daily"]) == 3


WRITER = """
import logging
import sys
logging.basicConfig(level=logging.INFO)
from datetime import date
from pathlib import Path
sys.path.insert(0, {tests!r})
from test_alternate_publish import publish_day
publish_day(Path(sys.argv[1]), "alternate", date.fromisoformat(sys.argv[2]), int(sys.argv[3]))
"""


def publish_elsewhere(live: Path, day: date, readings: int) -> subprocess.CompletedProcess:
    """A publish by another process, as the pipeline's is: DuckDB's file locks then apply."""
    script = WRITER.format(tests=str(Path(__file__).parent))
    return subprocess.run(
        [sys.executable, "-c", script, str(live), day.isoformat(), str(readings)],
        capture_output=True,
        text=True,
        timeout=120,
        check=True,
    )


def test_a_long_lived_reader_sees_each_publish_and_lets_the_writer_catch_up(
    tmp_path: Path,
) -> None:
    live = tmp_path / "home_energy.duckdb"
    publish_day(live, "alternate", FIRST, 10)
    publish_day(live, "alternate", FIRST + timedelta(days=1), 20)
    reader = WarehouseReader(live, "alternate")

    def days_seen() -> int:
        with reader.cursor() as con:
            return con.execute("select count(*) from daily").fetchone()[0]

    assert days_seen() == 2
    with reader.cursor() as con:  # a request in flight while the pipeline publishes
        publish_elsewhere(live, FIRST + timedelta(days=2), 30)
        assert con.execute("select count(*) from daily").fetchone()[0] == 2  # its snapshot
    assert days_seen() == 3  # the reader now holds the live file
    publish_elsewhere(live, FIRST + timedelta(days=3), 40)  # and no request comes after it
    time.sleep(3)  # idle: the reader lets go of the replaced file (it looks once a second)
    writer = publish_elsewhere(live, FIRST + timedelta(days=4), 50)  # writes the file it held
    assert "waiting for a reader" not in writer.stderr
    assert "caught up" in writer.stderr and "copying" not in writer.stderr
    assert days_seen() == 5
    reader.close()


def test_a_reader_that_never_lets_go_costs_a_copy_not_a_failure(tmp_path: Path) -> None:
    live = tmp_path / "home_energy.duckdb"
    for offset in range(2):
        publish_day(live, "alternate", FIRST + timedelta(days=offset), 10)
    held = duckdb.connect(str(live), read_only=True)  # a reader holding today's live file
    publish_elsewhere(live, FIRST + timedelta(days=2), 30)
    writer = publish_elsewhere(live, FIRST + timedelta(days=3), 40)  # changes the held one
    assert "waiting for a reader" in writer.stderr  # STANDBY_WAIT_S, then:
    assert "a reader still holds it" in writer.stderr and "copying" in writer.stderr
    assert held.execute("select count(*) from daily").fetchone()[0] == 2  # its own snapshot
    held.close()
    assert len(contents(live)["daily"]) == 4
    assert len(contents(live.with_name("home_energy.prev.duckdb"))["daily"]) == 3
