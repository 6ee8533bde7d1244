"""Ways to lose archived data or hide a failure that an outside test found (issue 16, items 1-2,
6-11): each case runs the real CLI against real influxd and DuckDB and failed before its fix."""

from __future__ import annotations

import signal
import socket
import threading
import time
from collections.abc import Iterator
from datetime import date
from pathlib import Path
from zoneinfo import ZoneInfo

import duckdb
import pyarrow.parquet as pq
import pytest
from conftest import fill_disk, minute_lines, mounted_tmpfs

from pipeline.days import day_window_utc

DAY = date(2025, 12, 17)
TOKYO = ZoneInfo("Asia/Tokyo")


def landing_rows(env, day: date = DAY) -> int:
    return pq.read_table(env.parquet / "landing" / "power" / f"dt={day}").num_rows


def warehouse_rows(env) -> int:
    with duckdb.connect(str(env.duckdb), read_only=True) as con:
        return con.execute("select count(*) from raw_meter_readings").fetchone()[0]


def hidden(env) -> list[str]:
    return sorted(p.name for p in env.parquet.rglob(".*"))


def load(env, *extra: str, day: date = DAY, task: str = "DuckLoadDay", **kw):
    return env.cli(task, "--date", day.isoformat(), "--local-scheduler", *extra, **kw)


def delete_day_in_source(env) -> None:
    start, end = day_window_utc(DAY, TOKYO)
    env.influx.query(
        f"DELETE FROM power WHERE time >= '{start:%Y-%m-%dT%H:%M:%SZ}' "
        f"AND time < '{end:%Y-%m-%dT%H:%M:%SZ}'",
        db="home_energy",
    )


# --- 1. an empty or misconfigured source never replaces the archive -------------------------


def test_source_emptied_by_retention_keeps_the_archive(pipeline_env) -> None:
    pipeline_env.write(minute_lines(96, DAY))
    pipeline_env.write(minute_lines(1, date(2025, 12, 20)))  # the measurement lives on
    assert load(pipeline_env).returncode == 0
    delete_day_in_source(pipeline_env)
    assert pipeline_env.cli("-m", "pipeline", "rebuild", "--date", str(DAY)).returncode == 0

    result = load(pipeline_env)
    assert result.returncode == 3, result.stderr  # missing data, not success
    assert "the source holds fewer values than the archive (0 < 192)" in result.stderr
    assert "--accept-fewer" in result.stderr
    assert landing_rows(pipeline_env) == 96
    assert warehouse_rows(pipeline_env) == 96
    status = pipeline_env.cli("-m", "pipeline", "status", "--days", "400").stdout
    assert any(line.startswith(f"{DAY}") and "rebuild" in line for line in status.splitlines())

    # Only the operator's explicit choice replaces it.
    forced = pipeline_env.cli("-m", "pipeline", "rebuild", "--date", str(DAY), "--accept-fewer")
    assert forced.returncode == 0
    assert load(pipeline_env).returncode == 0
    assert landing_rows(pipeline_env) == 0
    assert warehouse_rows(pipeline_env) == 0


def test_rebuild_can_be_cancelled_and_leaves_the_archive(pipeline_env) -> None:
    pipeline_env.write(minute_lines(96, DAY))
    assert load(pipeline_env).returncode == 0
    delete_day_in_source(pipeline_env)
    pipeline_env.write(minute_lines(1, date(2025, 12, 20)))
    assert pipeline_env.cli("-m", "pipeline", "rebuild", "--date", str(DAY)).returncode == 0
    assert load(pipeline_env).returncode == 3
    cancel = pipeline_env.cli("-m", "pipeline", "rebuild", "--date", str(DAY), "--cancel")
    assert "rebuild cancelled" in cancel.stdout
    assert load(pipeline_env).returncode == 0
    assert landing_rows(pipeline_env) == 96


@pytest.mark.parametrize(
    ("variable", "value", "says"),
    [
        ("INFLUX_MEASUREMENT", "powr", "has no measurement 'powr' (it has ['power'])"),
        (
            "INFLUX_BUCKET",
            "home_enrgy",
            "(database 'home_enrgy') has no measurement 'power' (the database is empty or does "
            "not exist): check INFLUX_BUCKET",
        ),
    ],
)
def test_missing_measurement_or_database_is_a_configuration_error(
    pipeline_env, variable: str, value: str, says: str
) -> None:
    pipeline_env.write(minute_lines(96, DAY))
    result = load(pipeline_env, extra_env={variable: value})
    assert result.returncode == 40
    assert says in result.stderr
    assert not (pipeline_env.parquet / "landing" / "power" / f"dt={DAY}").exists()
    check = pipeline_env.cli("-m", "pipeline", "check", extra_env={variable: value})
    assert check.returncode == 1
    assert any(
        line.startswith("FAIL  InfluxDB") and says in line for line in check.stdout.splitlines()
    )


# --- 2. a crash inside the partition swap never costs the only copy -------------------------


def kill_a_rebuild(env, point: str, archived: int, late: int) -> None:
    """Archive the day, give the source `late` more readings, kill the re-extraction at `point`."""
    env.write(minute_lines(archived, DAY))
    assert load(env).returncode == 0
    env.write(minute_lines(late, DAY, "meter2"))
    assert env.cli("-m", "pipeline", "rebuild", "--date", str(DAY)).returncode == 0
    killed = load(env, task="ExtractDay", extra_env={"PIPELINE_FAILPOINT": point})
    assert killed.returncode == -signal.SIGKILL


def test_crash_inside_swap_then_source_down_restores_the_archive(pipeline_env) -> None:
    kill_a_rebuild(pipeline_env, "partition.swapping", archived=100, late=20)
    assert not (pipeline_env.parquet / "landing" / "power" / f"dt={DAY}").exists()

    down = load(pipeline_env, extra_env={"INFLUX_URL": "http://127.0.0.1:9"})
    assert down.returncode == 40
    assert "unreachable" in down.stderr
    assert landing_rows(pipeline_env) == 100  # put back, not deleted
    assert hidden(pipeline_env) == []
    assert warehouse_rows(pipeline_env) == 100
    assert load(pipeline_env).returncode == 0  # the source is back: the rebuild goes through
    assert landing_rows(pipeline_env) == 120


# --- 6. a full disk at the DuckDB commit says so; check sees too little room ----------------


@pytest.fixture
def small_disk(tmp_path: Path) -> Iterator[Path]:
    with mounted_tmpfs(tmp_path / "small-disk", "32m") as mount:
        yield mount


def test_disk_full_at_commit_is_reported_as_disk_full(pipeline_env, small_disk) -> None:
    db = pipeline_env.duckdb = small_disk / "home_energy.duckdb"
    pipeline_env.env.update(DUCKDB_PATH=str(db), DUCKDB_PUBLISH_MODE="inplace")
    pipeline_env.write(minute_lines(100, DAY))
    assert load(pipeline_env).returncode == 0
    pipeline_env.write(minute_lines(1440, DAY, "meter3"))
    assert pipeline_env.cli("-m", "pipeline", "rebuild", "--date", str(DAY)).returncode == 0
    assert load(pipeline_env, task="ParquetDay").returncode == 0
    assert "FAIL  DuckDB" not in pipeline_env.cli("-m", "pipeline", "check").stdout
    filler = fill_disk(small_disk, leave_bytes=48_000)

    result = load(pipeline_env)
    assert result.returncode == 40
    assert f"No space left on device while writing {db}" in result.stderr
    assert "no transaction is active" not in result.stderr
    assert warehouse_rows(pipeline_env) == 100
    filler.unlink()
    filler = fill_disk(small_disk, leave_bytes=2**20)  # writable, but too little for a publish
    check = pipeline_env.cli("-m", "pipeline", "check")
    assert check.returncode == 1
    assert "a publish needs" in check.stdout
    filler.unlink()
    assert load(pipeline_env).returncode == 0
    assert warehouse_rows(pipeline_env) == 1540


# --- 7. two runs of one day at once: both finish, neither breaks the other ------------------


def test_two_runs_of_one_day_do_not_break_each_other(pipeline_env) -> None:
    pipeline_env.write(minute_lines(500, DAY))
    slow = pipeline_env.spawn(
        "ExtractDay",
        "--date",
        str(DAY),
        "--local-scheduler",
        "--no-lock",  # Luigi's process lock would refuse the second identical command
        extra_env={"PIPELINE_FAILPOINT": "partition.written:pause=4"},
    )
    time.sleep(1.5)  # the slow run has staged its partition and waits before swapping
    fast = load(pipeline_env, "--no-lock", task="ExtractDay")
    assert fast.returncode == 0, fast.stderr
    _, err = slow.communicate(timeout=120)
    assert slow.returncode == 0, err
    assert "FileNotFoundError" not in err
    assert landing_rows(pipeline_env) == 500
    assert hidden(pipeline_env) == []


# --- 8. status prints one run's columns, all from that run ----------------------------------


def test_status_shows_the_latest_run_whole(pipeline_env) -> None:
    failed = load(pipeline_env, extra_env={"INFLUX_URL": "http://127.0.0.1:9"})
    assert failed.returncode == 40
    pipeline_env.write(minute_lines(96, DAY))
    assert load(pipeline_env).returncode == 0
    status = pipeline_env.cli("-m", "pipeline", "status", "--days", "400").stdout
    line = next(line for line in status.splitlines() if line.startswith(str(DAY)))
    assert "SUCCESS" in line
    assert "unreachable" not in line


# --- 9. a crashed writer's folder is gone after the next run, even one with nothing to do ---


def test_leftover_of_a_killed_rebuild_is_removed_by_a_run_with_nothing_to_do(pipeline_env) -> None:
    kill_a_rebuild(pipeline_env, "partition.written", archived=96, late=10)
    assert hidden(pipeline_env) != []
    pipeline_env.cli("-m", "pipeline", "rebuild", "--date", str(DAY), "--cancel")

    rerun = load(pipeline_env)
    assert rerun.returncode == 0
    assert "ExtractDay" not in rerun.stderr.split("Scheduled", 1)[-1]  # nothing ran
    assert hidden(pipeline_env) == []


# --- 10. InfluxDB dying mid-answer is one line ----------------------------------------------


class CuttingProxy:
    """A TCP relay to the real influxd that breaks off the first CSV answer after a few bytes,
    as a server that dies mid-response does."""

    def __init__(self, upstream_port: int) -> None:
        self.upstream_port = upstream_port
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.port = self.listener.getsockname()[1]
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self) -> None:
        while True:
            try:
                client, _ = self.listener.accept()
            except OSError:
                return
            upstream = socket.create_connection(("127.0.0.1", self.upstream_port))
            threading.Thread(target=self._pipe, args=(client, upstream), daemon=True).start()
            threading.Thread(target=self._answers, args=(upstream, client), daemon=True).start()

    @staticmethod
    def _pipe(src: socket.socket, dst: socket.socket) -> None:
        try:
            while data := src.recv(65536):
                dst.sendall(data)
        except OSError:
            pass

    @staticmethod
    def _answers(upstream: socket.socket, client: socket.socket) -> None:
        seen, sent = b"", 0
        try:
            while data := upstream.recv(65536):
                seen += data
                csv_at = seen.find(b"text/csv", sent)
                if csv_at < 0:
                    client.sendall(seen[sent:])
                    sent = len(seen)
                    continue
                body_at = seen.find(b"\r\n\r\n", csv_at)
                if body_at >= 0:  # the headers and 40 bytes of the body, then nothing
                    client.sendall(seen[sent : body_at + 4 + 40])
                    break
        except OSError:
            pass
        for sock in (client, upstream):
            sock.close()

    def close(self) -> None:
        self.listener.close()


def test_influx_dying_mid_answer_is_one_line(pipeline_env) -> None:
    pipeline_env.write(minute_lines(1440, DAY))
    proxy = CuttingProxy(int(pipeline_env.influx.url.rsplit(":", 1)[1]))
    try:
        result = load(pipeline_env, extra_env={"INFLUX_URL": f"http://127.0.0.1:{proxy.port}"})
    finally:
        proxy.close()
    assert result.returncode == 40
    assert "broke off its answer" in result.stderr, result.stderr[-3000:]
    assert "Traceback" not in result.stderr
    assert not (pipeline_env.parquet / "landing" / "power" / f"dt={DAY}").exists()


# --- 11. a damaged DuckDB file is named, and restore-prev is the way back -------------------


def damage(path: Path) -> None:
    """Overwrite the middle of every block after the file header, as a failing disk might."""
    block, header = 262_144, 12_288
    with path.open("r+b") as f:
        size = path.stat().st_size
        for offset in range(header + 1024, size, block):
            f.seek(offset)
            f.write(b"\xa5" * 4096)


@pytest.mark.parametrize("mode", ["swap", "alternate"])
def test_damaged_database_is_detected_and_restored_from_prev(pipeline_env, mode: str) -> None:
    pipeline_env.env["DUCKDB_PUBLISH_MODE"] = mode
    second = date(2025, 12, 18)
    pipeline_env.write(minute_lines(1440, DAY) + minute_lines(1440, second))
    assert load(pipeline_env).returncode == 0
    assert load(pipeline_env, day=second).returncode == 0  # prev now holds the first day
    damage(pipeline_env.duckdb)
    restore = "python -m pipeline restore-prev"

    check = pipeline_env.cli("-m", "pipeline", "check")
    assert check.returncode == 1
    assert any(
        line.startswith("FAIL  DuckDB") and "is damaged" in line and restore in line
        for line in check.stdout.splitlines()
    )
    status = pipeline_env.cli("-m", "pipeline", "status", "--days", "400")
    assert status.returncode == 0, status.stderr
    assert "is damaged" in status.stdout and restore in status.stdout
    pipeline_env.write(minute_lines(5, DAY, "meter2"))
    assert pipeline_env.cli("-m", "pipeline", "rebuild", "--date", str(DAY)).returncode == 0
    run = load(pipeline_env)
    assert run.returncode != 0
    assert "is damaged" in run.stderr and restore in run.stderr

    restored = pipeline_env.cli("-m", "pipeline", "restore-prev")
    assert restored.returncode == 0, restored.stderr
    assert "damaged file was moved" in restored.stdout
    assert list(pipeline_env.duckdb.parent.glob("home_energy.damaged-*.duckdb"))
    assert warehouse_rows(pipeline_env) == 1440
    assert load(pipeline_env).returncode == 0
    assert load(pipeline_env, day=second).returncode == 0
    assert warehouse_rows(pipeline_env) == 2 * 1440 + 5
