"""Parquet partitions `<dataset>/dt=YYYY-MM-DD/` that readers see whole or not at all.

A partition is written into a hidden sibling folder (`.tmp-dt=...`, which a `dt=*` glob does not
match), fsynced with its manifest, then renamed into place; a rerun moves the old partition aside
the same way and deletes it. The manifest (`_manifest.json`) carries the row count, per-field
counts and a fingerprint of the data, which downstream targets compare to know they are stale.
"""

from __future__ import annotations

import hashlib
import json
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
_HIDDEN_PREFIXES = (".tmp-", ".old-")


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
        self.remove_leftovers()
        self.dataset_dir.mkdir(parents=True, exist_ok=True)
        staged = StagedPartition(self.dataset_dir / f".tmp-{self.path.name}-{uuid.uuid4().hex[:8]}")
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

    def _swap_in(self, tmp: Path) -> None:
        old = None
        if self.path.exists():
            old = self.dataset_dir / f".old-{self.path.name}-{uuid.uuid4().hex[:8]}"
            os.rename(self.path, old)
            failpoint("partition.swapping")
        os.rename(tmp, self.path)
        fsync_path(self.dataset_dir)
        if old:
            shutil.rmtree(old)

    def request_rebuild(self) -> bool:
        """Flag the partition so the next run rebuilds it; False if there is none."""
        if not self.path.is_dir():
            return False
        (self.path / REBUILD_FLAG).touch()
        return True

    def remove_leftovers(self) -> None:
        """Delete what a crashed run of this day left (hidden folders only, never a partition)."""
        if not self.dataset_dir.is_dir():
            return
        for prefix in _HIDDEN_PREFIXES:
            for leftover in self.dataset_dir.glob(f"{prefix}{self.path.name}-*"):
                shutil.rmtree(leftover, ignore_errors=True)


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
    """Every current partition of a dataset, from one folder listing."""
    if not dataset_dir.is_dir():
        return {}
    found = {}
    for entry in os.scandir(dataset_dir):
        if (
            entry.name.startswith("dt=")
            and entry.is_dir()
            and not os.path.exists(os.path.join(entry.path, REBUILD_FLAG))
        ):
            try:
                found[date.fromisoformat(entry.name[3:])] = Path(entry.path)
            except ValueError:
                continue
    return found


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
