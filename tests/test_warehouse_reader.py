"""A long-lived reader of the published DuckDB file sees every publish (issue 16 item 13).

The publishes are the pipeline's own (pipeline.publishing.Warehouse) in this same process, which
is where DuckDB's per-path instance cache bites: a naive reader keeps the first snapshot.
"""

from __future__ import annotations

import subprocess
import sys
import threading
from pathlib import Path

import duckdb
import pytest

from devstack.sample_warehouse import locked_by_another_process
from gateway.warehouse_reader import NO_DATA, UPDATING, WarehouseReader, WarehouseUnavailable
from pipeline.database import connect
from pipeline.publishing import Warehouse
from pipeline.schema import SCHEMA_SQL


def publish(live: Path, value: int, mode: str = "swap") -> None:
    with Warehouse(live, mode, lock_timeout_s=30).publishing() as path, connect(path) as con:
        con.execute(SCHEMA_SQL)
        con.execute("create or replace table answer as select ? as value", [value])


def read(reader: WarehouseReader) -> int:
    with reader.cursor() as con:
        return con.execute("select value from answer").fetchone()[0]


def test_a_held_reader_sees_each_swap_publish_and_never_blocks_it(tmp_path: Path) -> None:
    live = tmp_path / "home_energy.duckdb"
    publish(live, 1)
    reader = WarehouseReader(live, "swap")
    naive = duckdb.connect(str(live), read_only=True)  # what the reader must not do
    assert read(reader) == 1
    with reader.cursor() as con:  # a request in flight while the pipeline publishes
        publish(live, 2)
        assert con.execute("select value from answer").fetchone()[0] == 1  # its snapshot
    naive_again = duckdb.connect(str(live), read_only=True)
    assert naive_again.execute("select value from answer").fetchone()[0] == 1, (
        "DuckDB's instance cache no longer hides a publish: this test lost its point"
    )
    naive.close()
    naive_again.close()
    assert read(reader) == 2
    publish(live, 3)
    assert [read(reader) for _ in range(3)] == [3, 3, 3]
    reader.close()


def test_readers_in_threads_all_move_to_the_new_file(tmp_path: Path) -> None:
    live = tmp_path / "home_energy.duckdb"
    publish(live, 1)
    reader = WarehouseReader(live, "swap")
    seen: list[list[int]] = [[] for _ in range(4)]
    stop = threading.Event()

    def keep_reading(mine: list[int]) -> None:
        while not stop.is_set():
            mine.append(read(reader))

    threads = [threading.Thread(target=keep_reading, args=(mine,)) for mine in seen]
    for t in threads:
        t.start()
    for value in (2, 3, 4):
        publish(live, value)
    final = read(reader)
    stop.set()
    for t in threads:
        t.join(10)
    assert final == 4
    for mine in seen:  # no thread ever goes back to an older file
        assert mine == sorted(mine) and set(mine) <= {1, 2, 3, 4}
    assert read(reader) == 4
    reader.close()


def test_inplace_reader_does_not_hold_the_file_and_waits_for_no_writer(tmp_path: Path) -> None:
    live = tmp_path / "home_energy.duckdb"
    publish(live, 1, "inplace")
    reader = WarehouseReader(live, "inplace")
    assert read(reader) == 1
    # Between reads the file is free: another process may open it for writing.
    writer = subprocess.run(
        [sys.executable, "-c", f"import duckdb; duckdb.connect({str(live)!r}).close()"],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert writer.returncode == 0, writer.stderr
    publish(live, 2, "inplace")
    assert read(reader) == 2
    # While a writer holds the pipeline's lock, the reader says "updating" at once.
    with Warehouse(live, "inplace").writer_lock():
        with pytest.raises(WarehouseUnavailable) as caught:
            read(reader)
        assert caught.value.state == UPDATING


def test_missing_locked_and_broken_files_are_states_not_errors(tmp_path: Path) -> None:
    live = tmp_path / "home_energy.duckdb"
    reader = WarehouseReader(live, "swap")
    with pytest.raises(WarehouseUnavailable) as caught:
        read(reader)
    assert caught.value.state == NO_DATA
    live.write_bytes(b"half a copied file" * 100)  # not (yet) a database
    with pytest.raises(WarehouseUnavailable) as caught:
        read(reader)
    assert caught.value.state == UPDATING
    live.unlink()
    publish(live, 5)
    with locked_by_another_process(live):
        with pytest.raises(WarehouseUnavailable) as caught:
            read(reader)
        assert caught.value.state == UPDATING and "lock" in caught.value.message.lower()
    assert read(reader) == 5
    reader.close()


def test_publish_mode_is_checked() -> None:
    with pytest.raises(ValueError, match="DUCKDB_PUBLISH_MODE"):
        WarehouseReader(Path("x.duckdb"), "sometimes")


def test_remembered_answers_last_until_the_next_publish(tmp_path: Path) -> None:
    live = tmp_path / "home_energy.duckdb"
    publish(live, 1)
    reader = WarehouseReader(live, "swap")
    calls: list[int] = []

    def remembered() -> int:
        with reader.cursor() as con:
            return reader.remember("answer", lambda: calls.append(1) or read_with(con))

    def read_with(con: duckdb.DuckDBPyConnection) -> int:
        return con.execute("select value from answer").fetchone()[0]

    assert [remembered(), remembered()] == [1, 1] and len(calls) == 1
    publish(live, 2)
    assert [remembered(), remembered()] == [2, 2] and len(calls) == 2
    reader.close()
    inplace = WarehouseReader(live, "inplace")  # the file may change in place: never kept
    with inplace.cursor() as con:
        assert inplace.remember("answer", lambda: read_with(con)) == 2
        assert inplace.remember("answer", lambda: 7) == 7
