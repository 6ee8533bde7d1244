"""kill -9 at every point between two durable steps of ParquetDay and DuckLoadDay.

Each case archives a day, changes the source, and reruns with the real CLI killed at one point.
What a reader sees then must be whole (the old day or the new one, never half), the DuckDB file
must open and agree with its markers, and the next run must finish the day exactly.
"""

from __future__ import annotations

import signal
from datetime import date
from pathlib import Path

import duckdb
import pyarrow.parquet as pq
import pytest
from conftest import minute_lines

from pipeline.publishing import Warehouse

DAY = date(2025, 12, 17)


def visible_partitions(parquet: Path) -> dict[str, int]:
    """What a reader globbing `dt=*` sees: every visible partition must read whole."""
    seen = {}
    for folder in sorted(parquet.glob("*/dt=*")) + sorted(parquet.glob("*/*/dt=*")):
        assert (folder / "_manifest.json").is_file(), f"half partition visible: {folder}"
        seen[str(folder.relative_to(parquet))] = pq.read_table(folder).num_rows
    return seen


def warehouse_rows(db: Path) -> int | None:
    """Rows in the live file, after checking they agree with the markers."""
    if not db.exists():
        return None
    with duckdb.connect(str(db), read_only=True) as con:
        rows = con.execute("select count(*) from raw_meter_readings").fetchone()[0]
        marked = con.execute("select sum(row_count) from table_updates").fetchone()[0]
    assert rows == marked
    return rows


def run(env, task: str, failpoint: str | None = None, mode: str = "swap"):
    extra = {"DUCKDB_PUBLISH_MODE": mode}
    if failpoint:
        extra["PIPELINE_FAILPOINT"] = failpoint
    return env.cli(task, "--date", DAY.isoformat(), "--local-scheduler", extra_env=extra)


@pytest.fixture
def archived_then_changed(pipeline_env):
    """Day archived with 100 readings; the source then gains 20 late ones from a second meter."""
    pipeline_env.write(minute_lines(100, DAY))
    assert run(pipeline_env, "DuckLoadDay").returncode == 0
    pipeline_env.write(minute_lines(20, DAY, "meter2"))
    assert pipeline_env.cli("-m", "pipeline", "rebuild", "--date", DAY.isoformat()).returncode == 0
    return pipeline_env


def finish_and_check(env, mode: str = "swap") -> None:
    result = run(env, "DuckLoadDay", mode=mode)
    assert result.returncode == 0, result.stderr
    assert warehouse_rows(env.duckdb) == 120
    assert visible_partitions(env.parquet) == {
        "landing/power/dt=2025-12-17": 120,
        "raw_meter_readings/dt=2025-12-17": 120,
    }
    leftovers = [p.name for p in env.parquet.rglob(".*")] + [
        p.name for p in env.duckdb.parent.glob("*.next.duckdb*")
    ]
    assert leftovers == []


@pytest.mark.parametrize("point", ["partition.written", "partition.swapping"])
def test_kill_during_parquet_day(archived_then_changed, point: str) -> None:
    env = archived_then_changed
    assert run(env, "ExtractDay").returncode == 0
    killed = run(env, "ParquetDay", failpoint=point)
    assert killed.returncode == -signal.SIGKILL
    seen = visible_partitions(env.parquet)
    assert seen.get("raw_meter_readings/dt=2025-12-17") in (100, None)
    assert warehouse_rows(env.duckdb) == 100
    finish_and_check(env)


@pytest.mark.parametrize(
    "point",
    [
        "publish.copied",
        "load.before_commit",
        "publish.loaded",
        "publish.verified",
        "publish.prev_kept",
    ],
)
def test_kill_during_duck_load_day_swap(archived_then_changed, point: str) -> None:
    env = archived_then_changed
    assert run(env, "ParquetDay").returncode == 0
    killed = run(env, "DuckLoadDay", failpoint=point)
    assert killed.returncode == -signal.SIGKILL
    assert warehouse_rows(env.duckdb) == 100  # readers still see the old, whole database
    finish_and_check(env)
    assert warehouse_rows(env.duckdb.with_name("home_energy.prev.duckdb")) == 100


@pytest.mark.parametrize("point", ["load.before_commit", "publish.loaded"])
def test_kill_during_duck_load_day_inplace(archived_then_changed, point: str) -> None:
    env = archived_then_changed
    assert run(env, "ParquetDay", mode="inplace").returncode == 0
    killed = run(env, "DuckLoadDay", failpoint=point, mode="inplace")
    assert killed.returncode == -signal.SIGKILL
    assert warehouse_rows(env.duckdb) in (100, 120)  # one transaction: before or after, whole
    finish_and_check(env, mode="inplace")


def publication(db: Path) -> tuple[str, str | None]:
    """(live file, prev file) of the alternate mode: the names the two links point at."""
    prev = db.with_name("home_energy.prev.duckdb")
    return db.readlink().name, prev.readlink().name if prev.is_symlink() else None


@pytest.mark.parametrize(
    ("point", "standby"),
    [
        ("publish.prev_released", "caught up"),
        ("publish.caught_up", "caught up"),
        ("load.before_commit", "caught up"),
        ("publish.loaded", "caught up"),
        ("publish.verified", "caught up"),
        ("publish.swapped", "caught up"),
        ("publish.copied", "copied"),
        ("publish.loaded", "copied"),
    ],
)
def test_kill_during_duck_load_day_alternate(archived_then_changed, point: str, standby: str):
    """The standby file is either caught up (it was live one publish ago) or, the first time
    after another mode, copied from the live file."""
    env = archived_then_changed
    assert run(env, "ParquetDay", mode="alternate").returncode == 0
    if standby == "caught up":  # an alternate publish before: both files exist
        with Warehouse(env.duckdb, "alternate").publishing():
            pass  # publishes the same database again (what a DbtBuild with nothing new does)
    before = publication(env.duckdb) if env.duckdb.is_symlink() else None
    killed = run(env, "DuckLoadDay", failpoint=point, mode="alternate")
    assert killed.returncode == -signal.SIGKILL
    if point == "publish.swapped":  # killed after the link moved: the new day is live
        assert warehouse_rows(env.duckdb) == 120
    else:  # readers still see the old, whole database, through the same link
        assert warehouse_rows(env.duckdb) == 100
        if before is not None:
            assert publication(env.duckdb)[0] == before[0]
    finish_and_check(env, mode="alternate")
    assert not list(env.duckdb.parent.glob("*.copying.duckdb*"))
    assert not list(env.duckdb.parent.glob("*.pointing"))
    live, prev = publication(env.duckdb)
    assert {live, prev} <= {"home_energy.a.duckdb", "home_energy.b.duckdb", None}
    if point != "publish.swapped":  # the rerun published: the old database is the way back
        assert prev is not None and prev != live
        assert warehouse_rows(env.duckdb.with_name("home_energy.prev.duckdb")) == 100
