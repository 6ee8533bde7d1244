"""Parquet partitions `<dataset>/dt=YYYY-MM-DD/` that readers see whole or not at all.

A partition is written into a hidden sibling folder (`.tmp-dt=...`, which a `dt=*` glob does not
match), fsynced with its manifest, then renamed into place; a rerun moves the old partition aside
the same way and deletes it. The manifest (`_manifest.json`) carries the row count, per-field
counts and a fingerprint of the data, which downstream targets compare to know they are stale.
"""

from __future__ import annotations

import fcntl
import hashlib
import json
import logging
import os
import shutil
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import date
from pathlib import Path

import luigi

from pipeline.errors import disk_space_explained
from pipeline.failpoints import failpoint

MANIFEST = "_manifest.json"
# An operator's request to rebuild the day; the partition stays readable until its replacement
# has been written.
REBUILD_FLAG = "_REBUILD"
# Written into REBUILD_FLAG when the operator accepts a rebuild with fewer readings.
ACCEPT_FEWER = "accept-fewer"

logger = logging.getLogger("luigi-interface")


@dataclass
class StagedPartition:
    """A partition being written: its hidden folder and the fields to add to its manifest."""

    folder: Path
    manifest: dict = field(default_factory=dict)


class PartitionTarget(luigi.Target):
    """One `dt=` folder of a dataset; it exists once it has been renamed into place."""

    def __init__(self, dataset_dir: Path, day: date, built_from: str | None = None) -> None:
        self.dataset_dir = Path(dataset_dir)
        self.day = day
        self.path = self.dataset_dir / f"dt={day.isoformat()}"
        # The fingerprint of the input this partition must have been built from to be current.
        self.built_from = built_from

    def exists(self) -> bool:
        if (self.path / REBUILD_FLAG).exists():
            return False
        if self.built_from is None:
            return (self.path / MANIFEST).is_file()
        try:
            return self.manifest().get("built_from") == self.built_from
        except (OSError, ValueError):
            return False

    def manifest(self) -> dict:
        return json.loads((self.path / MANIFEST).read_text())

    def fingerprint(self) -> str | None:
        try:
            return self.manifest()["fingerprint"]
        except (OSError, KeyError, ValueError):
            return None

    def data_files(self) -> list[Path]:
        return sorted(self.path.glob("*.parquet"))

    def glob(self) -> str:
        return str(self.path / "*.parquet")

    @contextmanager
    def writing(self) -> Iterator[StagedPartition]:
        """Yields an empty hidden folder to fill; on success it becomes the partition."""
        self.dataset_dir.mkdir(parents=True, exist_ok=True)
        with self._swap_lock():
            self._recover()
        staged = StagedPartition(self._hidden(".tmp-"))
        staged.folder.mkdir()
        try:
            with disk_space_explained(self.path):
                yield staged
                failpoint("partition.written")
                write_manifest(staged.folder, staged.manifest)
                _fsync_tree(staged.folder)
                self._swap_in(staged.folder)
        finally:
            shutil.rmtree(staged.folder, ignore_errors=True)

    def _hidden(self, prefix: str) -> Path:
        # The writer's pid in the name tells a crashed attempt's leftover from a live one's.
        name = f"{prefix}{self.path.name}-{os.getpid()}-{uuid.uuid4().hex[:8]}"
        return self.dataset_dir / name

    def _swap_in(self, tmp: Path) -> None:
        old = None
        with self._swap_lock():
            if self.path.exists():
                old = self._hidden(".old-")
                os.rename(self.path, old)
                failpoint("partition.swapping")
            os.rename(tmp, self.path)
            fsync_path(self.dataset_dir)
        if old:
            shutil.rmtree(old, ignore_errors=True)

    @contextmanager
    def _swap_lock(self, wait: bool = True) -> Iterator[bool]:
        """The dataset's lock for the instants when `dt=` folders are renamed or recovered.

        Writers of the same day (two runs with --local-scheduler) fill their own hidden
        folders in parallel and only take turns to swap. Yields False, without the lock, when
        `wait` is False and another process holds it.
        """
        fd = os.open(self.dataset_dir, os.O_RDONLY)
        try:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | (0 if wait else fcntl.LOCK_NB))
            except BlockingIOError:
                yield False
                return
            yield True
        finally:
            os.close(fd)  # closing releases the lock

    def recover(self) -> None:
        """Repair what a crashed writer of this day left, if nobody is swapping right now."""
        if not self.dataset_dir.is_dir():
            return
        with self._swap_lock(wait=False) as locked:
            if locked:
                self._recover()

    def _recover(self) -> None:
        """Put back a partition a crash left moved aside, then delete dead writers' leftovers.

        A kill between the two renames of a swap leaves the day only in `.old-`: it is renamed
        back before anything is deleted. Staging folders of live processes are left alone.
        """
        olds = sorted(self.dataset_dir.glob(f".old-{self.path.name}-*"), key=_mtime)
        if olds and not self.path.exists():
            os.rename(olds.pop(), self.path)
            fsync_path(self.dataset_dir)
            logger.warning("%s: restored the partition a crashed swap had moved aside", self.path)
        for leftover in olds + list(self.dataset_dir.glob(f".tmp-{self.path.name}-*")):
            if not _writer_alive(leftover.name):
                shutil.rmtree(leftover, ignore_errors=True)

    def request_rebuild(self, accept_fewer: bool = False) -> bool:
        """Flag the partition so the next run rebuilds it; False if there is none.

        With `accept_fewer` the rebuild may replace the archive with fewer readings than it
        holds (the operator's explicit choice); otherwise such a rebuild is refused.
        """
        if not self.path.is_dir():
            return False
        (self.path / REBUILD_FLAG).write_text(ACCEPT_FEWER if accept_fewer else "")
        return True

    def cancel_rebuild(self) -> bool:
        flag = self.path / REBUILD_FLAG
        if not flag.exists():
            return False
        flag.unlink()
        return True

    def accepts_fewer(self) -> bool:
        """True when the operator allowed this day's rebuild to archive fewer readings."""
        try:
            return (self.path / REBUILD_FLAG).read_text().strip() == ACCEPT_FEWER
        except OSError:
            return False


def _mtime(path: Path) -> float:
    return path.stat().st_mtime


def _writer_alive(hidden_name: str) -> bool:
    """Whether the process that made a hidden `.tmp-`/`.old-` folder is still running."""
    try:
        pid = int(hidden_name.rsplit("-", 2)[-2])
    except ValueError:
        return False  # a name from before pids were recorded: its writer is long gone
    if pid == os.getpid():
        return False  # this process's own earlier attempt, which has ended
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def write_manifest(folder: Path, extras: dict) -> dict:
    files = sorted(folder.glob("*.parquet"))
    digest = hashlib.sha256()
    for file in files:
        digest.update(file.name.encode())
        digest.update(_sha256_file(file).encode())
    manifest = {"files": [f.name for f in files], "fingerprint": digest.hexdigest()[:32], **extras}
    (folder / MANIFEST).write_text(json.dumps(manifest, sort_keys=True, default=str))
    return manifest


def list_partitions(dataset_dir: Path) -> dict[date, Path]:
    """Every current partition of a dataset, from one folder listing (after crash recovery)."""
    if not dataset_dir.is_dir():
        return {}
    recover_crashed(dataset_dir)
    found = {}
    for entry in os.scandir(dataset_dir):
        day = _day_of(entry.name)
        if (
            day is not None
            and entry.name.startswith("dt=")
            and entry.is_dir()
            and not os.path.exists(os.path.join(entry.path, REBUILD_FLAG))
        ):
            found[day] = Path(entry.path)
    return found


def recover_crashed(dataset_dir: Path) -> None:
    """Recover every day of a dataset that crashed writers left hidden folders for.

    Run wherever the pipeline looks at a dataset, so a partition a crash moved aside comes back
    and no leftover outlives the next run, even one that finds every day complete.
    """
    if not dataset_dir.is_dir():
        return
    crashed = {
        day
        for entry in os.scandir(dataset_dir)
        if entry.name.startswith(".") and (day := _day_of(entry.name)) is not None
    }
    for day in crashed:
        PartitionTarget(dataset_dir, day).recover()


def _day_of(name: str) -> date | None:
    """The day of `dt=YYYY-MM-DD` or of a writer's `.tmp-dt=YYYY-MM-DD-...`/`.old-...` folder."""
    if name.startswith((".tmp-dt=", ".old-dt=")):
        name = name[5:]
    if not name.startswith("dt="):
        return None
    try:
        return date.fromisoformat(name[3:13])
    except ValueError:
        return None


def _sha256_file(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as f:
        while chunk := f.read(1 << 20):
            digest.update(chunk)
    return digest.hexdigest()


def _fsync_tree(folder: Path) -> None:
    for file in folder.iterdir():
        fsync_path(file)
    fsync_path(folder)


def fsync_path(path: Path) -> None:
    """Flush a file, or a folder's entries (a rename is durable once its folder is synced)."""
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
