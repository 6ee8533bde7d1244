"""Datasets on S3-compatible object storage (`PARQUET_BASE_DIR=s3://bucket/prefix`).

Object storage has no rename, so a partition is published the other way round: its files go
under a prefix of their own, `dt=YYYY-MM-DD/_attempt=<id>/`, and then one small manifest,
`dt=YYYY-MM-DD/_manifest.json`, is written in a single PUT (an object appears whole or not at
all). The manifest names its attempt; only a manifest makes a partition exist, and readers open
only the objects it names. A crashed attempt leaves objects nobody reads; a later run deletes
every attempt the manifest does not name once both are older than the grace period
(`[storage] attempt_grace_s`), so a reader that resolved the previous manifest can finish.

Connection: `S3_ENDPOINT_URL` for an S3-compatible server, the region from `[storage] s3_region`
(AWS_REGION or AWS_DEFAULT_REGION); credentials come from the AWS SDK's own chain
(AWS_ACCESS_KEY_ID/AWS_SECRET_ACCESS_KEY, AWS_PROFILE, instance roles), so none of them passes
through this code or its messages.
"""

from __future__ import annotations

import functools
import json
import logging
import os
import shutil
import tempfile
import time
import uuid
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from urllib.parse import urlsplit

import duckdb
import pyarrow as pa
import pyarrow.fs as pafs
import pyarrow.parquet as pq

from pipeline.config import storage
from pipeline.errors import PipelineError, disk_space_explained
from pipeline.failpoints import failpoint
from pipeline.partitions import (
    MANIFEST,
    REBUILD_FLAG,
    Dataset,
    StagedPartition,
    day_of,
    describe_files,
    writer_alive,
)

logger = logging.getLogger("luigi-interface")

ATTEMPT = "_attempt="
# Rows per Arrow batch handed to DuckDB: memory stays at a few batches, not a day.
BATCH_ROWS = 65_536
MANIFEST_READERS = 16
RECOVERY_INTERVAL_S = 60.0
_last_recovery: dict[str, float] = {}  # dataset root -> when this process last recovered it
# Codes in pyarrow's S3 errors, and what they mean for the operator.
_CREDENTIAL_ERRORS = (
    "INVALID_ACCESS_KEY_ID",
    "SIGNATURE_DOES_NOT_MATCH",
    "ACCESS_DENIED",
    "EXPIRED_TOKEN",
    "InvalidAccessKeyId",
    "AccessDenied",
)
_UNREACHABLE_ERRORS = ("NETWORK_CONNECTION", "Could not connect", "curlCode: 7")


@functools.cache
def s3_filesystem(endpoint_url: str, region: str) -> pafs.S3FileSystem:
    """One S3 client per process, endpoint ('' for AWS itself) and region ('' for the SDK's)."""
    options: dict[str, object] = {}
    if endpoint_url:
        parts = urlsplit(endpoint_url)
        options.update(endpoint_override=parts.netloc, scheme=parts.scheme or "https")
    if region:
        options["region"] = region
    return pafs.S3FileSystem(connect_timeout=10, request_timeout=60, **options)


@dataclass
class _DayObjects:
    """What one listing found under a day's `dt=` prefix."""

    manifest_at: datetime | None = None
    flagged: bool = False
    attempts: dict[str, datetime] = field(default_factory=dict)  # id -> newest object's time


class ObjectStoreDataset(Dataset):
    """A dataset under `s3://bucket/prefix/<name>`, published by manifests."""

    def __init__(self, fs: pafs.FileSystem, uri: str, endpoint: str, grace: timedelta) -> None:
        self.fs = fs
        self.uri = uri.rstrip("/")
        self.root = self.uri.removeprefix("s3://")  # bucket/prefix/name, pyarrow's spelling
        self.endpoint = endpoint or "AWS S3"
        self.grace = grace

    @classmethod
    def at(cls, uri: str) -> ObjectStoreDataset:
        store = storage()
        endpoint = store.s3_endpoint_url
        grace = timedelta(seconds=store.attempt_grace_s)
        return cls(s3_filesystem(endpoint, store.s3_region), uri, endpoint, grace)

    def describe(self, day: date | None = None) -> str:
        return f"{self.uri}/dt={day.isoformat()}" if day else self.uri

    # --- keys ----------------------------------------------------------------------------------

    def _day_key(self, day: date) -> str:
        return f"{self.root}/dt={day.isoformat()}"

    def _attempt_key(self, day: date, attempt: str) -> str:
        return f"{self._day_key(day)}/{ATTEMPT}{attempt}"

    # --- small objects -------------------------------------------------------------------------

    def read_text(self, day: date, name: str) -> str:
        with self._explained(), self.fs.open_input_stream(f"{self._day_key(day)}/{name}") as f:
            return f.read().decode()

    def write_text(self, day: date, name: str, text: str) -> None:
        # One PUT: the object becomes visible whole, or not at all.
        with self._explained(), self.fs.open_output_stream(f"{self._day_key(day)}/{name}") as f:
            f.write(text.encode())

    def remove(self, day: date, name: str) -> bool:
        key = f"{self._day_key(day)}/{name}"
        with self._explained():
            if self.fs.get_file_info(key).type != pafs.FileType.File:
                return False
            self.fs.delete_file(key)
        return True

    # --- reading -------------------------------------------------------------------------------

    def data_files(self, day: date) -> list[str]:
        """The objects the manifest names: never a listing, which would see other attempts."""
        manifest = json.loads(self.read_text(day, MANIFEST))
        prefix = self._attempt_key(day, manifest["attempt"])
        return [f"{prefix}/{name}" for name in manifest["files"]]

    def rows_view(self, con: duckdb.DuckDBPyConnection, days: list[date], view: str) -> None:
        """The partitions streamed to DuckDB as Arrow batches, one row group at a time."""
        con.register(view, self._reader(days))

    def read_table(self, day: date) -> pa.Table:
        return self._reader([day]).read_all()

    def _reader(self, days: list[date]) -> pa.RecordBatchReader:
        files = [file for day in days for file in self.data_files(day)]
        with self._explained():
            schema = pq.read_schema(files[0], filesystem=self.fs)
        return pa.RecordBatchReader.from_batches(schema, self._batches(files))

    def _batches(self, files: list[str]) -> Iterator[pa.RecordBatch]:
        for key in files:
            with self._explained(), self.fs.open_input_file(key) as f:
                yield from pq.ParquetFile(f).iter_batches(batch_size=BATCH_ROWS)

    def _each(self, read: Callable[[date], dict | None], days: list[date]) -> Iterable:
        # Each manifest is a request: a year of them is read a few dozen at a time.
        with ThreadPoolExecutor(max_workers=MANIFEST_READERS) as pool:
            return list(pool.map(read, days))

    # --- writing -------------------------------------------------------------------------------

    @contextmanager
    def writing(self, day: date) -> Iterator[StagedPartition]:
        """Stage the files locally, upload them under a new attempt, then write the manifest."""
        self.recover(day)
        staging = _staging_folder(self.root, day)
        staged = StagedPartition(staging)
        try:
            with disk_space_explained(staging):
                staging.mkdir(parents=True)
                yield staged
                manifest = describe_files(staging, staged.manifest)
            attempt = f"{datetime.now(UTC):%Y%m%dT%H%M%SZ}-{uuid.uuid4().hex[:8]}"
            prefix = self._attempt_key(day, attempt)
            with self._explained():
                for name in manifest["files"]:
                    pafs.copy_files(
                        str(staging / name),
                        f"{prefix}/{name}",
                        source_filesystem=pafs.LocalFileSystem(),
                        destination_filesystem=self.fs,
                    )
            failpoint("partition.written")
            manifest["attempt"] = attempt
            self.write_text(day, MANIFEST, json.dumps(manifest, sort_keys=True, default=str))
            # After the manifest: a crash in between costs at most a second rebuild, never the
            # operator's request.
            self.remove(day, REBUILD_FLAG)
        finally:
            shutil.rmtree(staging, ignore_errors=True)
            shutil.rmtree(staging.with_name(staging.name + ".spill"), ignore_errors=True)

    # --- listing and recovery ------------------------------------------------------------------

    def _listing(self, day: date | None = None) -> dict[date, _DayObjects]:
        """Every object of the dataset (or of one day), grouped by day, in one listing."""
        base = self._day_key(day) if day else self.root
        with self._explained():
            try:
                infos = self.fs.get_file_info(pafs.FileSelector(base, recursive=True))
            except FileNotFoundError:
                self._check_bucket()  # pyarrow reports a missing bucket as an empty prefix
                return {}
        days: dict[date, _DayObjects] = {}
        for info in infos:
            if info.type != pafs.FileType.File:
                continue
            parts = info.path[len(self.root) + 1 :].split("/")
            found = day_of(parts[0])
            if found is None or len(parts) < 2:
                continue
            objects = days.setdefault(found, _DayObjects())
            if parts[1] == MANIFEST:
                objects.manifest_at = info.mtime
            elif parts[1] == REBUILD_FLAG:
                objects.flagged = True
            elif parts[1].startswith(ATTEMPT):
                attempt = parts[1].removeprefix(ATTEMPT)
                newest = objects.attempts.get(attempt)
                objects.attempts[attempt] = max(newest or info.mtime, info.mtime)
        return days

    def current_days(self) -> set[date]:
        listing = self._listing()
        self._recover_listed(listing)
        return {
            day for day, objects in listing.items() if objects.manifest_at and not objects.flagged
        }

    def recover(self, day: date) -> None:
        self._recover_listed(self._listing(day))

    def recover_all(self) -> None:
        # Luigi calls this for every complete dependency (a year's range: hundreds of times);
        # a listing per call would cost more than it finds, at most once a minute is enough.
        now = time.monotonic()
        if now - _last_recovery.get(self.root, -RECOVERY_INTERVAL_S) < RECOVERY_INTERVAL_S:
            return
        _last_recovery[self.root] = now
        self._recover_listed(self._listing())

    def _recover_listed(self, listing: dict[date, _DayObjects]) -> None:
        for day, objects in listing.items():
            self._remove_stale_attempts(day, objects)
        _sweep_staging(self.root)

    def _remove_stale_attempts(self, day: date, objects: _DayObjects) -> None:
        """Delete the attempts the manifest does not name, once past the grace period.

        The manifest's age counts too: an attempt it replaced a moment ago may still be read by
        a worker that resolved the previous manifest.
        """
        oldest_allowed = datetime.now(UTC) - self.grace
        stale = [a for a, at in objects.attempts.items() if at <= oldest_allowed]
        if not stale or (objects.manifest_at and objects.manifest_at > oldest_allowed):
            return
        current = None
        if objects.manifest_at:
            try:
                current = json.loads(self.read_text(day, MANIFEST))["attempt"]
            except FileNotFoundError:
                return  # replaced or removed since the listing: the next run looks again
        for attempt in stale:
            if attempt != current:
                with self._explained():
                    self.fs.delete_dir(self._attempt_key(day, attempt))
                logger.info("%s: removed the unpublished attempt %s", self.describe(day), attempt)

    def _check_bucket(self) -> None:
        bucket = self.root.split("/", 1)[0]
        if self.fs.get_file_info(bucket).type == pafs.FileType.NotFound:
            raise object_store_error(self.uri, self.endpoint, OSError("NO_SUCH_BUCKET"))

    # --- operator's check ----------------------------------------------------------------------

    def probe(self) -> str:
        key = f"{self.root}/_check-{uuid.uuid4().hex[:8]}"
        with self._explained():
            with self.fs.open_output_stream(key) as f:
                f.write(b"ok")
            self.fs.delete_file(key)
        return f"{self.uri} writable at {self.endpoint}"

    @contextmanager
    def _explained(self) -> Iterator[None]:
        """Turn the store's refusals into one line that says what to fix."""
        try:
            yield
        except FileNotFoundError:
            raise
        except OSError as e:
            raise object_store_error(self.uri, self.endpoint, e) from None


def object_store_error(uri: str, endpoint: str, error: OSError) -> PipelineError:
    text = str(error)
    bucket = uri.removeprefix("s3://").split("/", 1)[0]
    if "NO_SUCH_BUCKET" in text or "NoSuchBucket" in text:
        return PipelineError(
            f"object store {endpoint} has no bucket {bucket!r}: create it, or correct "
            "PARQUET_BASE_DIR"
        )
    if any(code in text for code in _CREDENTIAL_ERRORS):
        code = next(code for code in _CREDENTIAL_ERRORS if code in text)
        return PipelineError(
            f"object store {endpoint} refused the credentials for {uri} ({code}): check "
            "AWS_ACCESS_KEY_ID/AWS_SECRET_ACCESS_KEY or AWS_PROFILE"
        )
    if any(sign in text for sign in _UNREACHABLE_ERRORS):
        return PipelineError(
            f"object store {endpoint} is unreachable; check S3_ENDPOINT_URL and the network"
        )
    return PipelineError(f"object store {endpoint} failed for {uri}: {text.splitlines()[0]}")


def _staging_root() -> Path:
    return Path(tempfile.gettempdir()) / "home-energy-staging"


def _staging_folder(root: str, day: date) -> Path:
    """A local folder for one attempt; its name carries the writer's pid, as on disk."""
    slug = root.replace("/", "_")
    return (
        _staging_root() / f".tmp-{slug}-dt={day.isoformat()}-{os.getpid()}-{uuid.uuid4().hex[:8]}"
    )


def _sweep_staging(root: str) -> None:
    """Delete local staging folders that crashed writers of this dataset left."""
    folder = _staging_root()
    if not folder.is_dir():
        return
    for leftover in folder.glob(f".tmp-{root.replace('/', '_')}-dt=*"):
        if not writer_alive(leftover.name):
            shutil.rmtree(leftover, ignore_errors=True)
