"""Publishing the DuckDB warehouse without readers ever seeing a half state (design.md section 4).

Writers take a lock file of our own (the swap goes around DuckDB's lock), work in
`home_energy.next.duckdb` copied from the live file, verify it (`warehouse.verify`), CHECKPOINT,
then swap it in: the live file is hard-linked to `home_energy.prev.duckdb` and replaced by one
atomic rename, so a reader opening the live path always finds a whole database, and readers
holding the old one keep it. `inplace` mode does the work as one transaction in the live file.
"""

from __future__ import annotations

import fcntl
import logging
import os
import shutil
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import duckdb

from pipeline.database import connect
from pipeline.errors import PipelineError, damage_explained, disk_space_explained
from pipeline.failpoints import failpoint
from pipeline.partitions import fsync_path
from pipeline.schema import SCHEMA_SQL
from pipeline.warehouse import verify

logger = logging.getLogger("luigi-interface")

# Room a publish needs beyond copying the live file, at least (a day's rows, WAL, checkpoint).
PUBLISH_HEADROOM = 16 * 2**20


def sibling(live: Path, role: str) -> Path:
    """`home_energy.duckdb` -> `home_energy.<role>.duckdb`."""
    return live.with_name(f"{live.stem}.{role}{live.suffix}")


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
