"""Parquet partitions `<dataset>/dt=YYYY-MM-DD/` that readers see whole or not at all.

A local dataset renames each partition into place (LocalDataset, here); one on object storage
publishes it with a manifest written last (pipeline/objectstore.py). Either way the manifest
(`_manifest.json`) carries the row count, per-field counts and a fingerprint of the data, which
downstream targets compare to know they are stale.
"""

from __future__ import annotations

import fcntl
import hashlib
import json
import logging
import os
import shutil
import socket
import tempfile
import uuid
from abc import ABC, abstractmethod
from collections.abc import Callable, Iterable, Iterator
from contextlib import AbstractContextManager, contextmanager
from dataclasses import dataclass, field
from datetime import date
from pathlib import Path

import duckdb
import luigi
import pyarrow as pa
import pyarrow.parquet as pq

from pipeline.errors import disk_space_explained
from pipeline.failpoints import failpoint

MANIFEST = "_manifest.json"
# An operator's request to rebuild the day; the partition stays readable until its replacement
# has been written.
REBUILD_FLAG = "_REBUILD"
# Written into REBUILD_FLAG when the operator accepts a rebuild with fewer readings.
ACCEPT_FEWER = "accept-fewer"
OBJECT_STORE_SCHEME = "s3://"

logger = logging.getLogger("luigi-interface")


@dataclass
class StagedPartition:
    """A partition being written: a local folder to fill and the fields to add to its manifest."""

    folder: Path
    manifest: dict = field(default_factory=dict)


class Dataset(ABC):
    """Where a dataset's partitions live, and how one is published so readers see it whole.

    Two layouts share one PartitionTarget: a local folder, where a partition is renamed into
    place, and an object store, where only a manifest written last makes a partition exist.
    Both keep the manifest (`_manifest.json`) and the rebuild flag (`_REBUILD`) under `dt=`.
    """

    @abstractmethod
    def describe(self, day: date | None = None) -> str:
        """The dataset's (or a day's) location, for messages."""

    @abstractmethod
    def read_text(self, day: date, name: str) -> str:
        """A small file under the day's `dt=`; FileNotFoundError if there is none."""

    @abstractmethod
    def write_text(self, day: date, name: str, text: str) -> None: ...

    @abstractmethod
    def remove(self, day: date, name: str) -> bool:
        """Delete a small file under the day's `dt=`; False if there was none."""

    @abstractmethod
    def data_files(self, day: date) -> list[str]:
        """The current partition's Parquet files."""

    @abstractmethod
    def writing(self, day: date) -> AbstractContextManager[StagedPartition]:
        """An empty local folder to fill; on a clean exit it becomes the day's partition."""

    @abstractmethod
    def current_days(self) -> set[date]:
        """Days with a partition and no rebuild request, from one listing (after recovery)."""

    @abstractmethod
    def recover(self, day: date) -> None:
        """Repair or remove what crashed writers of the day left."""

    @abstractmethod
    def recover_all(self) -> None:
        """Recover every day crashed writers left something for."""

    @abstractmethod
    def rows_view(self, con: duckdb.DuckDBPyConnection, days: list[date], view: str) -> None:
        """Make the days' rows readable in `con` as `view` (streamed, not loaded whole)."""

    @abstractmethod
    def read_table(self, day: date) -> pa.Table:
        """The day's rows whole in memory, for a partition known to be small."""

    @abstractmethod
    def probe(self) -> str:
        """Prove the dataset can be written (`python -m pipeline check`); a line to print."""

    def manifests(self, days: Iterable[date]) -> dict[date, dict]:
        """The manifests of those of `days` that have one (what bulk_complete compares)."""
        days = list(days)
        read = self._each(self._manifest_or_none, days)
        return {day: manifest for day, manifest in zip(days, read, strict=True) if manifest}

    def _each(self, read: Callable[[date], dict | None], days: list[date]) -> Iterable:
        return map(read, days)

    def _manifest_or_none(self, day: date) -> dict | None:
        try:
            return json.loads(self.read_text(day, MANIFEST))
        except (FileNotFoundError, ValueError):
            return None


class PartitionTarget(luigi.Target):
    """One `dt=` partition of a dataset; it exists once it has been published whole."""

    def __init__(self, dataset: Dataset | Path, day: date, built_from: str | None = None) -> None:
        self.dataset = dataset if isinstance(dataset, Dataset) else LocalDataset(Path(dataset))
        self.day = day
        # The fingerprint of the input this partition must have been built from to be current.
        self.built_from = built_from

    def __str__(self) -> str:
        return self.dataset.describe(self.day)

    def exists(self) -> bool:
        if self._flag() is not None:
            return False
        if self.built_from is None:
            return self.archived()
        try:
            return self.manifest().get("built_from") == self.built_from
        except (OSError, ValueError):
            return False

    def archived(self) -> bool:
        """Whether the day has a partition, even one flagged for rebuild."""
        try:
            self.manifest()
        except (OSError, ValueError):
            return False
        return True

    def manifest(self) -> dict:
        return json.loads(self.dataset.read_text(self.day, MANIFEST))

    def fingerprint(self) -> str | None:
        try:
            return self.manifest()["fingerprint"]
        except (OSError, KeyError, ValueError):
            return None

    def data_files(self) -> list[str]:
        return self.dataset.data_files(self.day)

    def rows(self, con: duckdb.DuckDBPyConnection, view: str) -> AbstractContextManager[str]:
        """The partition's rows as a temporary view of `con`, named `view`, while in use."""
        return rows_of([self], con, view)

    def read_table(self) -> pa.Table:
        """The partition's rows whole in memory (see its manifest's `rows` first)."""
        return self.dataset.read_table(self.day)

    def writing(self) -> AbstractContextManager[StagedPartition]:
        """Yields an empty local folder to fill; on success it becomes the partition."""
        return self.dataset.writing(self.day)

    def recover(self) -> None:
        self.dataset.recover(self.day)

    def request_rebuild(self, accept_fewer: bool = False) -> bool:
        """Flag the partition so the next run rebuilds it; False if there is none.

        With `accept_fewer` the rebuild may replace the archive with fewer readings than it
        holds (the operator's explicit choice); otherwise such a rebuild is refused.
        """
        if not self.archived():
            return False
        self.dataset.write_text(self.day, REBUILD_FLAG, ACCEPT_FEWER if accept_fewer else "")
        return True

    def cancel_rebuild(self) -> bool:
        return self.dataset.remove(self.day, REBUILD_FLAG)

    def accepts_fewer(self) -> bool:
        """True when the operator allowed this day's rebuild to archive fewer readings."""
        return (self._flag() or "").strip() == ACCEPT_FEWER

    def _flag(self) -> str | None:
        try:
            return self.dataset.read_text(self.day, REBUILD_FLAG)
        except FileNotFoundError:
            return None


@contextmanager
def rows_of(
    partitions: list[PartitionTarget], con: duckdb.DuckDBPyConnection, view: str
) -> Iterator[str]:
    """The rows of partitions of one dataset as one temporary view of `con`, named `view`,
    while in use: one statement reads them all (a statement per small day costs more than its
    rows)."""
    partitions[0].dataset.rows_view(con, [p.day for p in partitions], view)
    try:
        yield view
    finally:
        con.unregister(view)


class LocalDataset(Dataset):
    """A dataset in a local folder: each partition is written hidden, then renamed into place.

    A partition is written into a hidden sibling folder (`.tmp-dt=...`, which a `dt=*` glob
    does not match), fsynced with its manifest, then renamed into place; a rerun moves the old
    partition aside the same way and deletes it.
    """

    def __init__(self, folder: Path) -> None:
        self.folder = Path(folder)

    def describe(self, day: date | None = None) -> str:
        return str(self.path(day) if day else self.folder)

    def path(self, day: date) -> Path:
        return self.folder / f"dt={day.isoformat()}"

    def read_text(self, day: date, name: str) -> str:
        try:
            return (self.path(day) / name).read_text()
        except NotADirectoryError:
            raise FileNotFoundError(self.path(day) / name) from None

    def write_text(self, day: date, name: str, text: str) -> None:
        (self.path(day) / name).write_text(text)

    def remove(self, day: date, name: str) -> bool:
        try:
            (self.path(day) / name).unlink()
        except FileNotFoundError:
            return False
        return True

    def data_files(self, day: date) -> list[str]:
        return [str(p) for p in sorted(self.path(day).glob("*.parquet"))]

    def rows_view(self, con: duckdb.DuckDBPyConnection, days: list[date], view: str) -> None:
        files = [file for day in days for file in self.data_files(day)]
        con.register(view, con.read_parquet(files, hive_partitioning=False))

    def read_table(self, day: date) -> pa.Table:
        return pa.concat_tables(pq.ParquetFile(f).read() for f in self.data_files(day))

    def probe(self) -> str:
        return check_writable(self.folder)

    @contextmanager
    def writing(self, day: date) -> Iterator[StagedPartition]:
        self.folder.mkdir(parents=True, exist_ok=True)
        with self._swap_lock():
            self._recover(day)
        staged = StagedPartition(self._hidden(".tmp-", day))
        staged.folder.mkdir()
        try:
            with disk_space_explained(self.path(day)):
                yield staged
                failpoint("partition.written")
                write_manifest(staged.folder, staged.manifest)
                _fsync_tree(staged.folder)
                self._swap_in(day, staged.folder)
        finally:
            shutil.rmtree(staged.folder, ignore_errors=True)

    def _hidden(self, prefix: str, day: date) -> Path:
        # The writer's pid in the name tells a crashed attempt's leftover from a live one's.
        return self.folder / f"{prefix}{self.path(day).name}-{os.getpid()}-{uuid.uuid4().hex[:8]}"

    def _swap_in(self, day: date, tmp: Path) -> None:
        old = None
        path = self.path(day)
        with self._swap_lock():
            if path.exists():
                old = self._hidden(".old-", day)
                os.rename(path, old)
                failpoint("partition.swapping")
            os.rename(tmp, path)
            fsync_path(self.folder)
        if old:
            shutil.rmtree(old, ignore_errors=True)

    @contextmanager
    def _swap_lock(self, wait: bool = True) -> Iterator[bool]:
        """The dataset's lock for the instants when `dt=` folders are renamed or recovered.

        Writers of the same day (two runs with --local-scheduler) fill their own hidden
        folders in parallel and only take turns to swap. Yields False, without the lock, when
        `wait` is False and another process holds it.
        """
        fd = os.open(self.folder, os.O_RDONLY)
        try:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | (0 if wait else fcntl.LOCK_NB))
            except BlockingIOError:
                yield False
                return
            yield True
        finally:
            os.close(fd)  # closing releases the lock

    def recover(self, day: date) -> None:
        """Repair what a crashed writer of this day left, if nobody is swapping right now."""
        if not self.folder.is_dir():
            return
        with self._swap_lock(wait=False) as locked:
            if locked:
                self._recover(day)

    def _recover(self, day: date) -> None:
        """Put back a partition a crash left moved aside, then delete dead writers' leftovers.

        A kill between the two renames of a swap leaves the day only in `.old-`: it is renamed
        back before anything is deleted. Staging folders of live processes are left alone.
        """
        path = self.path(day)
        leftovers = self._leftovers(path.name)
        olds = sorted((p for p in leftovers if p.name.startswith(".old-")), key=_mtime)
        if olds and not path.exists():
            os.rename(olds.pop(), path)
            fsync_path(self.folder)
            logger.warning("%s: restored the partition a crashed swap had moved aside", path)
        for leftover in olds + [p for p in leftovers if p.name.startswith(".tmp-")]:
            if not writer_alive(leftover.name):
                shutil.rmtree(leftover, ignore_errors=True)

    def _leftovers(self, name: str) -> list[Path]:
        """The `.old-` and `.tmp-` folders of partition `name`, in one listing of the dataset
        (two globs cost twice as much, and every write of a long backfill asks)."""
        prefixes = (f".old-{name}-", f".tmp-{name}-")
        with os.scandir(self.folder) as entries:
            return [Path(entry.path) for entry in entries if entry.name.startswith(prefixes)]

    def recover_all(self) -> None:
        """Run wherever the pipeline looks at a dataset, so a partition a crash moved aside
        comes back and no leftover outlives the next run, even one that finds every day
        complete."""
        if not self.folder.is_dir():
            return
        crashed = {
            day
            for entry in os.scandir(self.folder)
            if entry.name.startswith(".") and (day := day_of(entry.name)) is not None
        }
        for day in crashed:
            self.recover(day)

    def current_days(self) -> set[date]:
        if not self.folder.is_dir():
            return set()
        self.recover_all()
        return {
            day
            for entry in os.scandir(self.folder)
            if (day := day_of(entry.name)) is not None
            and entry.name.startswith("dt=")
            and entry.is_dir()
            and not os.path.exists(os.path.join(entry.path, REBUILD_FLAG))
        }


def _mtime(path: Path) -> float:
    return path.stat().st_mtime


def writer_alive(hidden_name: str) -> bool:
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


def describe_files(folder: Path, extras: dict) -> dict:
    """The manifest of the Parquet files in `folder`: their names and a fingerprint of them."""
    files = sorted(folder.glob("*.parquet"))
    digest = hashlib.sha256()
    for file in files:
        digest.update(file.name.encode())
        digest.update(_sha256_file(file).encode())
    return {
        "files": [f.name for f in files],
        "fingerprint": digest.hexdigest()[:32],
        # Which machine and process wrote it: with many workers, who extracted the day.
        "written_by": f"{socket.gethostname()}/{os.getpid()}",
        **extras,
    }


def write_manifest(folder: Path, extras: dict) -> None:
    manifest = describe_files(folder, extras)
    (folder / MANIFEST).write_text(json.dumps(manifest, sort_keys=True, default=str))


def open_dataset(base: str, name: str) -> Dataset:
    """The dataset `name` under `PARQUET_BASE_DIR`: a local folder or `s3://bucket/prefix`."""
    if base.startswith(OBJECT_STORE_SCHEME):
        from pipeline.objectstore import ObjectStoreDataset  # pyarrow's S3 only where used

        return ObjectStoreDataset.at(f"{base.rstrip('/')}/{name}")
    return LocalDataset(Path(base) / name)


def check_writable(folder: Path) -> str:
    folder.mkdir(parents=True, exist_ok=True)
    with tempfile.NamedTemporaryFile(dir=folder, prefix=".check-") as f:
        f.write(b"ok")
        f.flush()
        os.fsync(f.fileno())
    free = shutil.disk_usage(folder).free
    return f"{folder} writable, {free / 2**30:.1f} GiB free"


def day_of(name: str) -> date | None:
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
