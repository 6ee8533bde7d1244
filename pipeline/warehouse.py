"""The DuckDB warehouse: schema, marker rows, and publishing without readers seeing a half state.

Publishing (design.md section 4): writers take a lock file of our own (the swap goes around
DuckDB's lock), work in `home_energy.next.duckdb` copied from the live file, verify it by reading
every column of every table and comparing row counts with the markers, CHECKPOINT, then swap it
in: the live file is hard-linked to `home_energy.prev.duckdb` and replaced by one atomic rename,
so a reader opening the live path always finds a whole database, and readers holding the old one
keep it. `inplace` mode does the work as one transaction in the live file instead.
"""

from __future__ import annotations

import fcntl
import logging
import os
import shutil
import time
from collections.abc import Iterable, Iterator
from contextlib import contextmanager, suppress
from datetime import date, datetime
from pathlib import Path

import duckdb
import luigi

from pipeline.errors import PipelineError, damage_explained, disk_space_explained
from pipeline.failpoints import failpoint
from pipeline.partitions import PartitionTarget, fsync_path
from pipeline.transform import RAW_COLUMNS

logger = logging.getLogger("luigi-interface")

RAW_COLUMN_LIST = ", ".join(RAW_COLUMNS)
MARKER_TABLE = "table_updates"
# Room a publish needs beyond copying the live file, at least (a day's rows, WAL, checkpoint).
PUBLISH_HEADROOM = 16 * 2**20
RAW_TABLE = "raw_meter_readings"

SCHEMA_SQL = f"""
create table if not exists {RAW_TABLE} (
    ts_utc timestamptz not null,
    ts_jst timestamp not null,
    source varchar not null,
    instant_power_w double,
    energy_import_kwh double,
    energy_export_kwh double,
    ingested_at timestamptz not null
);
-- Luigi's marker-table convention (luigi.contrib.rdbms), extended with what the pipeline needs.
create table if not exists {MARKER_TABLE} (
    update_id varchar primary key,
    target_table varchar not null,
    inserted timestamptz not null,
    partition_date date,
    row_count bigint,
    fingerprint varchar
);
"""


def sibling(live: Path, role: str) -> Path:
    """`home_energy.duckdb` -> `home_energy.<role>.duckdb`."""
    return live.with_name(f"{live.stem}.{role}{live.suffix}")


def connect(path: Path, read_only: bool = False) -> duckdb.DuckDBPyConnection:
    try:
        with damage_explained(path):
            return duckdb.connect(str(path), read_only=read_only)
    except duckdb.IOException as e:
        if "lock" in str(e).lower():
            raise PipelineError(
                f"DuckDB file {path} is locked by another process; close it and rerun "
                f"({str(e).splitlines()[0]})"
            ) from None
        raise PipelineError(f"DuckDB file {path} cannot be opened: {e}") from None


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


def has_table(con: duckdb.DuckDBPyConnection, name: str) -> bool:
    return bool(
        con.execute(
            "select count(*) from information_schema.tables where table_name = ?", [name]
        ).fetchone()[0]
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
    con.execute(
        f"insert or replace into {MARKER_TABLE} "
        "(update_id, target_table, inserted, partition_date, row_count, fingerprint) "
        "values (?, ?, now(), ?, ?, ?)",
        [update_id, target_table, partition_date, row_count, fingerprint],
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
        return read_markers(self.live, self.update_id).get(self.update_id) == self.fingerprint


def load_day(
    con: duckdb.DuckDBPyConnection,
    *,
    partition: PartitionTarget,
    window_utc: tuple[datetime, datetime],
    update_id: str,
    day: date,
    fingerprint: str,
) -> int:
    """Replace one day of readings from its Parquet partition and mark it, in one transaction.

    The partition is read where it is (a local folder, or object storage as Arrow batches).
    """
    con.execute("begin transaction")
    try:
        con.execute(f"delete from {RAW_TABLE} where ts_utc >= ? and ts_utc < ?", list(window_utc))
        with partition.rows(con, "partition_rows") as rows:
            con.execute(
                f"insert into {RAW_TABLE} ({RAW_COLUMN_LIST}) select {RAW_COLUMN_LIST} from {rows}"
            )
        rows = con.execute(
            f"select count(*) from {RAW_TABLE} where ts_utc >= ? and ts_utc < ?", list(window_utc)
        ).fetchone()[0]
        write_marker(
            con, update_id, RAW_TABLE, partition_date=day, row_count=rows, fingerprint=fingerprint
        )
        failpoint("load.before_commit")
        con.execute("commit")
    except BaseException:
        # A commit that failed (e.g. disk full) has already ended the transaction: the
        # rollback's own error would hide the cause.
        with suppress(duckdb.Error):
            con.execute("rollback")
        raise
    return rows


def verify(con: duckdb.DuckDBPyConnection) -> None:
    """Read every column of every table, and check the raw table against its markers.

    DuckDB has no `PRAGMA integrity_check`; reading everything exercises every block's checksum.
    """
    tables = [
        t
        for (t,) in con.execute(
            "select table_name from information_schema.tables where table_type = 'BASE TABLE'"
        ).fetchall()
    ]
    for table in tables:
        con.execute(f'select count(*), bit_xor(hash(columns(*))) from "{table}"').fetchall()
    expected = con.execute(
        f"select coalesce(sum(row_count), 0) from {MARKER_TABLE} where target_table = ?",
        [RAW_TABLE],
    ).fetchone()[0]
    actual = con.execute(f"select count(*) from {RAW_TABLE}").fetchone()[0]
    if expected != actual:
        raise PipelineError(
            f"verification failed: {RAW_TABLE} has {actual} rows, its markers say {expected}; "
            "the new database was not published"
        )


class Warehouse:
    """The live DuckDB file and the way writers change it."""

    def __init__(self, live: Path, mode: str = "swap", lock_timeout_s: float = 0.0) -> None:
        self.live = Path(live)
        self.mode = mode
        self.lock_timeout_s = lock_timeout_s

    @property
    def next_path(self) -> Path:
        return sibling(self.live, "next")

    @property
    def prev_path(self) -> Path:
        return sibling(self.live, "prev")

    @property
    def lock_path(self) -> Path:
        return self.live.with_name(self.live.name + ".lock")

    @contextmanager
    def publishing(self) -> Iterator[Path]:
        """The database file to change; on a clean exit it is verified and published."""
        self.live.parent.mkdir(parents=True, exist_ok=True)
        swap = self.mode == "swap"
        with self.writer_lock(), disk_space_explained(self.live), damage_explained(self.live):
            target = self.next_path if swap else self.live
            try:
                if swap:
                    self._prepare_next()
                yield target
                failpoint("publish.loaded")
                with connect(target) as con:
                    verify(con)
                    con.execute("checkpoint")
                if swap:
                    fsync_path(target)
                    failpoint("publish.verified")
                    self._publish(target)
            finally:
                if swap:
                    _remove_db(target)

    @contextmanager
    def writing(self) -> Iterator[duckdb.DuckDBPyConnection]:
        """A connection to the database to change, with the schema in place."""
        with self.publishing() as path:
            con = connect(path)
            try:
                con.execute(SCHEMA_SQL)
                yield con
            finally:
                con.close()

    def _prepare_next(self) -> None:
        """A fresh copy of the live file to work in (copying is O(history): batch the days)."""
        _remove_db(self.next_path)
        if self.live.exists():
            if _wal(self.live).exists():
                raise PipelineError(
                    f"{self.live} has an unmerged WAL ({_wal(self.live).name}); open it once with "
                    "DuckDB to checkpoint it before publishing over it"
                )
            shutil.copyfile(self.live, self.next_path)
            failpoint("publish.copied")

    def _publish(self, work: Path) -> None:
        if self.live.exists():
            staged_prev = sibling(self.live, "prev-staging")
            staged_prev.unlink(missing_ok=True)
            os.link(self.live, staged_prev)
            os.replace(staged_prev, self.prev_path)
            failpoint("publish.prev_kept")
        os.replace(work, self.live)
        fsync_path(self.live.parent)
        logger.info("published %s (previous kept as %s)", self.live, self.prev_path.name)

    def room_needed(self) -> int:
        """Free bytes a publish needs: the copy of the live file (swap mode), plus headroom for
        the day's rows, the WAL and the checkpoint."""
        size = self.live.stat().st_size if self.live.exists() else 0
        return (size if self.mode == "swap" else 0) + max(size // 4, PUBLISH_HEADROOM)

    def restore_prev(self) -> Path | None:
        """Make the copy kept before the last publish live again, after checking it is whole.

        The damaged live file is moved aside (returned, None if there was none), never
        deleted; the next run loads again whatever the restored markers do not cover.
        """
        with self.writer_lock():
            if not self.prev_path.exists():
                raise PipelineError(
                    f"no {self.prev_path.name} to restore (inplace mode keeps none): move "
                    f"{self.live.name} aside and rerun the range to rebuild it from Parquet"
                )
            with connect(self.prev_path, read_only=True) as con, damage_explained(self.prev_path):
                verify(con)
            aside = None
            if self.live.exists():
                aside = sibling(self.live, f"damaged-{time.strftime('%Y%m%dT%H%M%S')}")
                os.replace(self.live, aside)
                _wal(self.live).unlink(missing_ok=True)
            staged = sibling(self.live, "restoring")
            shutil.copyfile(self.prev_path, staged)
            fsync_path(staged)
            os.replace(staged, self.live)
            fsync_path(self.live.parent)
            return aside

    @contextmanager
    def writer_lock(self) -> Iterator[None]:
        with self.lock_path.open("a+") as f:
            deadline = time.monotonic() + self.lock_timeout_s
            waiting = False
            while True:
                try:
                    fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB)
                    break
                except BlockingIOError:
                    f.seek(0)
                    holder = f.read().strip() or "unknown"
                    if time.monotonic() >= deadline:
                        raise PipelineError(
                            f"another writer holds {self.lock_path} (pid {holder}); "
                            "DuckDB takes one writer at a time"
                        ) from None
                    if not waiting:
                        logger.info("waiting for the writer lock held by pid %s", holder)
                        waiting = True
                    time.sleep(0.2)
            f.seek(0)
            f.truncate()
            f.write(str(os.getpid()))
            f.flush()
            try:
                yield
            finally:
                f.truncate(0)
                fcntl.flock(f, fcntl.LOCK_UN)


def _wal(path: Path) -> Path:
    return path.with_name(path.name + ".wal")


def _remove_db(path: Path) -> None:
    path.unlink(missing_ok=True)
    _wal(path).unlink(missing_ok=True)


def marker_ids(task_family: str, days: Iterable[date]) -> dict[date, str]:
    return {day: f"{task_family}(date={day.isoformat()})" for day in days}
