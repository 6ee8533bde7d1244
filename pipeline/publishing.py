"""Publishing the DuckDB warehouse without readers ever seeing a half state (design.md section 4).

Writers take a lock file of our own (the swap goes around DuckDB's lock). Three modes:

- `swap` (default): work in `home_energy.next.duckdb` copied from the live file, verify it
  (`warehouse.verify`), CHECKPOINT, then swap it in: the live file is hard-linked to
  `home_energy.prev.duckdb` and replaced by one atomic rename, so a reader opening the live path
  always finds a whole database, and readers holding the old one keep it. The copy makes every
  publish cost the whole history.
- `alternate`: two files take turns, `home_energy.a.duckdb` and `home_energy.b.duckdb`; the live
  name is a symbolic link to one of them and `home_energy.prev.duckdb` a link to the other (the
  live file of one publish ago). A publish releases the prev link, brings the other file up to
  date by copying only what differs from the live one (`standby.catch_up`), works in it,
  verifies the days it changed (`warehouse.verify_days`), CHECKPOINTs, and points the live link
  at it with one atomic rename; the file it replaced becomes prev. A publish costs what changed,
  not the history. A reader still holding the other file (it has not looked since the last
  publish) keeps it locked: the writer waits a moment, then copies the live file instead.
- `inplace`: the work is one transaction in the live file.
"""

from __future__ import annotations

import fcntl
import logging
import os
import shutil
import time
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager, contextmanager, nullcontext
from datetime import date
from pathlib import Path
from typing import TypeVar

import duckdb

from contracts.settings import PUBLISH_MODES
from contracts.warehouse import writer_lock_path
from pipeline.database import connect, wal_path
from pipeline.errors import PipelineError, damage_explained, disk_space_explained
from pipeline.failpoints import failpoint
from pipeline.partitions import fsync_path
from pipeline.schema import SCHEMA_SQL
from pipeline.standby import catch_up, changed_days
from pipeline.warehouse import verify, verify_days

logger = logging.getLogger("luigi-interface")

# Room a publish needs beyond copying the live file, at least (a day's rows, WAL, checkpoint).
PUBLISH_HEADROOM = 16 * 2**20
# The two files of the alternate mode.
ALTERNATES = ("a", "b")
# How long an alternate publish waits for readers to let go of the file it is about to change
# (a long-lived reader looks about once a second) before it copies the live file instead.
STANDBY_WAIT_S = 5.0
# What a publish hands its caller to change the file with: the path, or a connection.
W = TypeVar("W")


def sibling(live: Path, role: str) -> Path:
    """`home_energy.duckdb` -> `home_energy.<role>.duckdb`."""
    return live.with_name(f"{live.stem}.{role}{live.suffix}")


class Warehouse:
    """The live DuckDB file and the way writers change it."""

    def __init__(
        self, live: Path, mode: str = PUBLISH_MODES[0], lock_timeout_s: float = 0.0
    ) -> None:
        if mode not in PUBLISH_MODES:
            raise ValueError(f"publish mode must be one of {', '.join(PUBLISH_MODES)}: {mode!r}")
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
        return writer_lock_path(self.live)

    @contextmanager
    def publishing(self) -> Iterator[Path]:
        """The database file to change; on a clean exit it is verified and published."""
        with self._published(nullcontext) as path:
            yield path

    @contextmanager
    def writing(self) -> Iterator[duckdb.DuckDBPyConnection]:
        """A connection to the database to change, with the schema in place. It stays open
        until the file is verified, so the verification shares its DuckDB instance instead of
        starting another (0.015 s)."""
        with self._published(_schema_connection) as con:
            yield con

    @contextmanager
    def _published(self, open_work: Callable[[Path], AbstractContextManager[W]]) -> Iterator[W]:
        """Publish the file `open_work` gives the caller access to, once the caller is done."""
        self.live.parent.mkdir(parents=True, exist_ok=True)
        with self.writer_lock(), disk_space_explained(self.live), damage_explained(self.live):
            if self.mode == "alternate":
                with self._alternating(open_work) as work:
                    yield work
                return
            swap = self.mode == "swap"
            target = self.next_path if swap else self.live
            started = time.monotonic()
            try:
                if swap:
                    self._prepare_next()
                ready = time.monotonic()
                with open_work(target) as work:
                    yield work
                    worked = time.monotonic()
                    failpoint("publish.loaded")
                    with connect(target) as con:
                        verify(con)
                        con.execute("checkpoint")
                if swap:
                    fsync_path(target)
                    failpoint("publish.verified")
                    self._publish(target)
                _log_published(
                    self.live,
                    f"{self.mode} mode, copy {ready - started:.2f} s",
                    (ready - started) + (time.monotonic() - worked),
                )
            finally:
                if swap:
                    _remove_db(target)

    @contextmanager
    def _alternating(self, open_work: Callable[[Path], AbstractContextManager[W]]) -> Iterator[W]:
        """Publish through the file that is not live (the alternate mode, see the module)."""
        started = time.monotonic()
        live = self._live_file()
        standby = self._standby(live)
        # The standby stops being a whole previous copy now: no way back points at it.
        self.prev_path.unlink(missing_ok=True)
        fsync_path(self.live.parent)
        failpoint("publish.prev_released")
        copied = self._bring_up_to_date(standby, live)
        ready = time.monotonic()
        with open_work(standby) as work:
            yield work
            worked = time.monotonic()
            failpoint("publish.loaded")
            with connect(standby) as con:
                if live is None:
                    verify(con)
                else:
                    verify_days(con, sorted(set(copied) | set(changed_days(con, live))))
                con.execute("checkpoint")
        fsync_path(standby)
        failpoint("publish.verified")
        _point(self.live, standby)
        failpoint("publish.swapped")
        if live is not None:
            _point(self.prev_path, live)
        _log_published(
            self.live,
            f"now {standby.name}; {len(copied)} raw day(s) caught up in {ready - started:.2f} s, "
            f"previous kept as {self.prev_path.name}",
            (ready - started) + (time.monotonic() - worked),
        )

    def _live_file(self) -> Path | None:
        """The file the live link points at; a plain live file (from another mode) becomes the
        first of the two files, in place. None before the first publish."""
        if self.live.is_symlink():
            return self._live_target()
        if not self.live.exists():
            return None
        self._check_merged(self.live)
        first = sibling(self.live, ALTERNATES[0])
        _remove_db(first)
        os.link(self.live, first)
        _point(self.live, first)
        return first

    def _standby(self, live: Path | None) -> Path:
        first, second = (sibling(self.live, role) for role in ALTERNATES)
        return second if live is not None and live.name == first.name else first

    def _bring_up_to_date(self, standby: Path, live: Path | None) -> list[date]:
        """Make `standby` equal to `live` (empty if there is none); the raw days it copied."""
        if live is None:
            _remove_db(standby)
            return []
        con = self._open_standby(standby) if standby.exists() else None
        if con is not None:
            with con:
                copied = catch_up(con, live)
            failpoint("publish.caught_up")
            return copied
        self._check_merged(live)
        staged = sibling(self.live, "copying")
        _remove_db(staged)
        shutil.copyfile(live, staged)
        fsync_path(staged)
        _remove_db(standby)
        os.replace(staged, standby)
        failpoint("publish.copied")
        return []

    def _open_standby(self, standby: Path) -> duckdb.DuckDBPyConnection | None:
        """A writable connection to the standby, or None when it cannot be had: a reader still
        holds it after STANDBY_WAIT_S, or it does not open (then it is copied afresh)."""
        deadline = time.monotonic() + STANDBY_WAIT_S
        waiting = False
        while True:
            try:
                return duckdb.connect(str(standby))
            except duckdb.Error as e:
                held = "lock" in str(e).lower()
                if not held or time.monotonic() >= deadline:
                    reason = "a reader still holds it" if held else str(e).splitlines()[0]
                    logger.warning(
                        "%s cannot be brought up to date (%s): copying %s instead",
                        standby.name,
                        reason,
                        self.live.name,
                    )
                    return None
                if not waiting:
                    logger.info("waiting for a reader to let go of %s", standby.name)
                    waiting = True
                time.sleep(0.2)

    def _check_merged(self, path: Path) -> None:
        if wal_path(path).exists():
            raise PipelineError(
                f"{path} has an unmerged WAL ({wal_path(path).name}); open it once with "
                "DuckDB to checkpoint it before publishing over it"
            )

    def _prepare_next(self) -> None:
        """A fresh copy of the live file to work in (copying is O(history): batch the days)."""
        _remove_db(self.next_path)
        if self.live.exists():
            self._check_merged(self.live)
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

    def room_needed(self) -> int:
        """Free bytes a publish needs: a copy of the live file (swap mode, or the alternate
        mode's first publish), plus headroom for the day's rows, the WAL and the checkpoint."""
        size = self.live.stat().st_size if self.live.exists() else 0
        copies = self.mode == "swap" or (
            self.mode == "alternate" and not self._standby(self._live_target()).exists()
        )
        return (size if copies else 0) + max(size // 4, PUBLISH_HEADROOM)

    def _live_target(self) -> Path | None:
        return self.live.resolve() if self.live.is_symlink() else None

    def restore_prev(self) -> Path | None:
        """Make the copy kept before the last publish live again, after checking it is whole.

        The damaged live file is moved aside (returned, None if there was none), never
        deleted; the next run loads again whatever the restored markers do not cover.
        """
        with self.writer_lock():
            if not self.prev_path.exists():
                raise PipelineError(
                    f"no {self.prev_path.name} to restore: inplace mode keeps none, and an "
                    "interrupted alternate-mode publish uses it up (the live file is whole then, "
                    f"and the next publish keeps one again); or move {self.live.name} aside "
                    "and rerun the range to rebuild it from Parquet"
                )
            with connect(self.prev_path, read_only=True) as con, damage_explained(self.prev_path):
                verify(con)
            aside = sibling(self.live, f"damaged-{time.strftime('%Y%m%dT%H%M%S')}")
            if self.prev_path.is_symlink():  # the alternate mode: point the live link back
                damaged = self._live_target()
                _point(self.live, self.prev_path.resolve())
                self.prev_path.unlink()
                if damaged is None:
                    return None
                os.replace(damaged, aside)
                wal_path(damaged).unlink(missing_ok=True)
                fsync_path(self.live.parent)
                return aside
            damaged = self.live if self.live.exists() else None
            if damaged is not None:
                os.replace(damaged, aside)
                wal_path(damaged).unlink(missing_ok=True)
            staged = sibling(self.live, "restoring")
            shutil.copyfile(self.prev_path, staged)
            fsync_path(staged)
            os.replace(staged, self.live)
            fsync_path(self.live.parent)
            return aside if damaged is not None else None

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


@contextmanager
def _schema_connection(path: Path) -> Iterator[duckdb.DuckDBPyConnection]:
    with connect(path) as con:
        con.execute(SCHEMA_SQL)
        yield con


def _point(link: Path, target: Path) -> None:
    """Make `link` a symbolic link to `target` (a sibling) with one atomic rename."""
    staged = link.with_name(link.name + ".pointing")
    staged.unlink(missing_ok=True)
    os.symlink(target.name, staged)
    os.replace(staged, link)
    fsync_path(link.parent)


def _log_published(live: Path, detail: str, seconds: float) -> None:
    """The one line per publish; its time counts the publishing steps, not the work."""
    logger.info("published %s (%s) in %.2f s", live, detail, seconds)


def _remove_db(path: Path) -> None:
    path.unlink(missing_ok=True)
    wal_path(path).unlink(missing_ok=True)
