"""A disk that fills: a clear error, the archive and the database as they were, then recovery.

The data folders live on a small tmpfs; a filler file leaves too little room for the rebuilt day.
"""

from __future__ import annotations

from collections.abc import Iterator
from datetime import date
from pathlib import Path

import duckdb
import pyarrow.parquet as pq
import pytest
from conftest import SECOND, fill_disk, mounted_tmpfs, power_lines

DAY = date(2025, 12, 17)


@pytest.fixture
def small_disk(tmp_path: Path) -> Iterator[Path]:
    with mounted_tmpfs(tmp_path / "small-disk", "8m") as mount:
        yield mount


def second_lines(n: int, source: str) -> list[str]:
    """`n` readings a second apart, their power scattered (Parquet cannot squeeze them much)."""
    return power_lines(
        DAY,
        range(n),
        SECOND,
        source=source,
        power_w=lambda i: (i * 7919) % 3001 + 0.5,
        import_kwh=lambda i: round(i * 0.013, 6),
    )


def test_disk_full_fails_clearly_and_loses_nothing(pipeline_env, small_disk, monkeypatch) -> None:
    parquet, db = small_disk / "parquet", small_disk / "duckdb" / "home_energy.duckdb"
    settings = {"PARQUET_BASE_DIR": str(parquet), "DUCKDB_PATH": str(db)}
    pipeline_env.env.update(settings)
    pipeline_env.write(second_lines(100, "meter1"))
    assert pipeline_env.cli("DuckLoadDay", "--date", str(DAY), "--local-scheduler").returncode == 0

    pipeline_env.write(second_lines(60_000, "meter2"))  # a big late replay
    assert pipeline_env.cli("-m", "pipeline", "rebuild", "--date", str(DAY)).returncode == 0
    filler = fill_disk(small_disk, leave_bytes=200_000)

    result = pipeline_env.cli("DuckLoadDay", "--date", str(DAY), "--local-scheduler")
    assert result.returncode == 40
    assert f"No space left on device while writing {parquet}" in result.stderr
    # The archive and the database are what they were; no half-written leftovers.
    assert pq.read_table(parquet / "landing" / "power" / f"dt={DAY}").num_rows == 100
    assert pq.read_table(parquet / "raw_meter_readings" / f"dt={DAY}").num_rows == 100
    with duckdb.connect(str(db), read_only=True) as con:
        assert con.execute("select count(*) from raw_meter_readings").fetchone()[0] == 100
    assert [p.name for p in parquet.rglob(".*")] == []

    filler.unlink()
    result = pipeline_env.cli("DuckLoadDay", "--date", str(DAY), "--local-scheduler")
    assert result.returncode == 0, result.stderr
    with duckdb.connect(str(db), read_only=True) as con:
        assert con.execute("select count(*) from raw_meter_readings").fetchone()[0] == 60_100


def test_disk_full_while_publishing_keeps_the_live_database(pipeline_env, small_disk) -> None:
    db = small_disk / "duckdb" / "home_energy.duckdb"
    pipeline_env.env["DUCKDB_PATH"] = str(db)
    pipeline_env.write(second_lines(100, "meter1"))
    assert pipeline_env.cli("DuckLoadDay", "--date", str(DAY), "--local-scheduler").returncode == 0
    pipeline_env.write(second_lines(200, "meter2"))
    assert pipeline_env.cli("-m", "pipeline", "rebuild", "--date", str(DAY)).returncode == 0
    filler = fill_disk(small_disk, leave_bytes=db.stat().st_size // 2)  # no room for the copy

    result = pipeline_env.cli("DuckLoadDay", "--date", str(DAY), "--local-scheduler")
    assert result.returncode == 40
    assert f"No space left on device while writing {db}" in result.stderr
    with duckdb.connect(str(db), read_only=True) as con:
        assert con.execute("select count(*) from raw_meter_readings").fetchone()[0] == 100
    assert not db.with_name("home_energy.next.duckdb").exists()

    filler.unlink()
    assert pipeline_env.cli("DuckLoadDay", "--date", str(DAY), "--local-scheduler").returncode == 0
    with duckdb.connect(str(db), read_only=True) as con:
        assert con.execute("select count(*) from raw_meter_readings").fetchone()[0] == 300


def test_disk_full_in_alternate_mode_keeps_the_live_database(pipeline_env, small_disk) -> None:
    """First the copy that makes the second file, then a catch-up, fail for want of room: the
    live link and its file stay as they were, and the rerun with room converges."""
    db = small_disk / "duckdb" / "home_energy.duckdb"
    pipeline_env.env.update(DUCKDB_PATH=str(db), DUCKDB_PUBLISH_MODE="alternate")

    def live_rows() -> int:
        with duckdb.connect(str(db), read_only=True) as con:
            return con.execute("select count(*) from raw_meter_readings").fetchone()[0]

    expected = 100
    pipeline_env.write(second_lines(expected, "meter1"))
    assert pipeline_env.cli("DuckLoadDay", "--date", str(DAY), "--local-scheduler").returncode == 0
    for source, leave in (("meter2", db.stat().st_size // 2), ("meter3", 50_000)):
        pipeline_env.write(second_lines(20_000, source))
        assert pipeline_env.cli("-m", "pipeline", "rebuild", "--date", str(DAY)).returncode == 0
        assert (
            pipeline_env.cli("ParquetDay", "--date", str(DAY), "--local-scheduler").returncode == 0
        )
        live = db.readlink()
        filler = fill_disk(small_disk, leave_bytes=leave)

        result = pipeline_env.cli("DuckLoadDay", "--date", str(DAY), "--local-scheduler")
        assert result.returncode == 40, result.stderr
        assert "No space left on device" in result.stderr
        assert db.readlink() == live and live_rows() == expected

        filler.unlink()
        result = pipeline_env.cli("DuckLoadDay", "--date", str(DAY), "--local-scheduler")
        assert result.returncode == 0, result.stderr
        expected += 20_000
        assert db.readlink() != live and live_rows() == expected
