"""A year's backfill killed with kill -9 at random moments and rerun ends identical to one that
was never interrupted: the same partitions and rows, the same DuckDB rows and markers, and
nothing left behind by the killed writers."""

from __future__ import annotations

import json
import random
import signal
import time
from datetime import date, timedelta
from pathlib import Path
from zoneinfo import ZoneInfo

import duckdb

from pipeline.days import day_window_utc

TOKYO = ZoneInfo("Asia/Tokyo")
FIRST, STOP = date(2025, 1, 1), date(2026, 1, 1)  # a year of local days, STOP excluded
EVERY = timedelta(hours=2)  # coarse readings: the cost of a backfill is per day, not per reading
KILLS = 10
RANGE = (
    *("RangeDaily", "--of", "DuckLoadDay", "--start", str(FIRST), "--stop", str(STOP)),
    *("--days-back", "5000", "--local-scheduler"),
)


def year_lines() -> list[str]:
    start = int(day_window_utc(FIRST, TOKYO)[0].timestamp() * 1000)
    count = (STOP - FIRST) // EVERY
    step = int(EVERY.total_seconds() * 1000)
    return [
        f"power,source=meter1 instant_power_w={100 + n % 50}.0,energy_import_kwh={n / 4} "
        f"{start + n * step}"
        for n in range(count)
    ]


def installation(root: Path) -> dict[str, str]:
    """Environment of a pipeline with its own Parquet folder and DuckDB file."""
    return {
        "PARQUET_BASE_DIR": str(root / "parquet"),
        "DUCKDB_PATH": str(root / "duckdb" / "home_energy.duckdb"),
    }


def dataset_rows(folder: Path, exclude: str) -> list[tuple]:
    with duckdb.connect() as con:
        return con.execute(
            f"select * exclude ({exclude}) from read_parquet(?, hive_partitioning = true) "
            "order by all",
            [str(folder / "dt=*" / "*.parquet")],
        ).fetchall()


def manifests(folder: Path, keys: tuple[str, ...]) -> dict[str, dict]:
    found = {}
    for path in sorted(folder.glob("dt=*/_manifest.json")):
        manifest = json.loads(path.read_text())
        found[path.parent.name] = {k: manifest.get(k) for k in keys}
    return found


def state(env: dict[str, str]) -> dict:
    """What a backfill leaves, without the instants it ran at (ingested_at, extracted_at)."""
    parquet, live = Path(env["PARQUET_BASE_DIR"]), Path(env["DUCKDB_PATH"])
    landing, raw = parquet / "landing" / "power", parquet / "raw_meter_readings"
    with duckdb.connect(str(live), read_only=True) as con:
        rows = con.execute(
            "select * exclude (ingested_at) from raw_meter_readings order by all"
        ).fetchall()
        markers = con.execute(
            "select update_id, target_table, partition_date, row_count, fingerprint "
            "from table_updates order by update_id"
        ).fetchall()
    raw_manifests = manifests(raw, ("rows", "sources", "built_from", "fingerprint"))
    landing_manifests = manifests(landing, ("rows", "field_counts", "fingerprint"))
    for update_id, _, day, _, fingerprint in markers:  # each marker names what it loaded
        assert raw_manifests[f"dt={day}"]["fingerprint"] == fingerprint, update_id
    for name, manifest in raw_manifests.items():
        assert manifest.pop("built_from") == landing_manifests[name]["fingerprint"], name
        manifest.pop("fingerprint")  # the canonical file holds ingested_at: it differs per run
    return {
        "landing rows": dataset_rows(landing, "dt"),
        "raw rows": dataset_rows(raw, "dt, ingested_at"),
        "landing manifests": landing_manifests,
        "raw manifests": raw_manifests,
        "duckdb rows": rows,
        "markers": [m[:4] for m in markers],
        "leftovers": sorted(str(p.relative_to(parquet)) for p in parquet.glob("**/.*")),
    }


def test_a_year_killed_ten_times_and_rerun_ends_as_if_never_interrupted(
    pipeline_env, tmp_path
) -> None:
    pipeline_env.write(year_lines())
    whole = installation(tmp_path / "whole")
    done = pipeline_env.cli(*RANGE, extra_env=whole, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    expected = state(whole)
    assert len(expected["landing manifests"]) == (STOP - FIRST).days
    assert len(expected["duckdb rows"]) == (STOP - FIRST) // EVERY

    seed = random.randrange(2**32)
    rng = random.Random(seed)
    killed = installation(tmp_path / "killed")
    kills = 0
    while kills < KILLS:
        run = pipeline_env.spawn(*RANGE, extra_env=killed)
        time.sleep(rng.uniform(0.5, 4.0))  # the import takes ~1.5 s: some kills land before work
        if run.poll() is not None:
            break  # the backfill finished before this kill
        run.send_signal(signal.SIGKILL)
        run.communicate(timeout=60)
        kills += 1
    assert kills == KILLS, f"the backfill finished after {kills} kills (seed {seed})"
    rerun = pipeline_env.cli(*RANGE, extra_env=killed, timeout=600)
    assert rerun.returncode == 0, f"seed {seed}: {rerun.stderr[-3000:]}"
    assert state(killed) == expected, f"seed {seed}"
