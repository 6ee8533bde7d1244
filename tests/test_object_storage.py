"""The archive on S3-compatible object storage, and workers on several machines sharing it.

A real S3 server (moto in server mode, its own process on a free loopback port, checking
credentials) holds a bucket per test; the pipeline runs as the real CLI. Two workers with their
own working folders stand in for two machines: they share luigid and the bucket, and only the
one that holds the warehouse may load DuckDB.
"""

from __future__ import annotations

import json
import signal
import uuid
from dataclasses import dataclass
from datetime import date, timedelta
from pathlib import Path
from zoneinfo import ZoneInfo

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from conftest import fetch, hourly_lines, recent_days

from devstack.servers import MotoS3Server
from pipeline.objectstore import _staging_root

TOKYO = ZoneInfo("Asia/Tokyo")
DAY = date(2025, 12, 17)  # outside the late-data lookback: only an explicit rebuild redoes it


@dataclass
class Archive:
    """The test's bucket, seen directly through the S3 API (not through the pipeline)."""

    server: MotoS3Server
    bucket: str
    prefix: str = "home"

    @property
    def uri(self) -> str:
        return f"s3://{self.bucket}/{self.prefix}"

    def objects(self) -> dict[str, tuple[str, object]]:
        """key -> (ETag, LastModified) of every object in the bucket."""
        found = {}
        pages = self.server.s3().get_paginator("list_objects_v2").paginate(Bucket=self.bucket)
        for page in pages:
            for item in page.get("Contents", []):
                found[item["Key"]] = (item["ETag"], item["LastModified"])
        return found

    def manifest(self, dataset: str, day: date) -> dict | None:
        key = f"{self.prefix}/{dataset}/dt={day}/_manifest.json"
        try:
            body = self.server.s3().get_object(Bucket=self.bucket, Key=key)["Body"].read()
        except self.server.s3().exceptions.NoSuchKey:
            return None
        return json.loads(body)

    def attempts(self, dataset: str, day: date) -> set[str]:
        """The attempt ids that have objects under the day's prefix."""
        day_prefix = f"{self.prefix}/{dataset}/dt={day}/_attempt="
        return {
            key.removeprefix(day_prefix).split("/")[0]
            for key in self.objects()
            if key.startswith(day_prefix)
        }

    def rows(self, dataset: str, day: date) -> int:
        """Rows a reader finds by following the manifest to the objects it names."""
        manifest = self.manifest(dataset, day)
        assert manifest is not None, f"{dataset} {day} has no manifest"
        total = 0
        for name in manifest["files"]:
            key = f"{self.prefix}/{dataset}/dt={day}/_attempt={manifest['attempt']}/{name}"
            body = self.server.s3().get_object(Bucket=self.bucket, Key=key)["Body"].read()
            total += pq.read_metadata(pa.BufferReader(body)).num_rows
        return total


@pytest.fixture(scope="session")
def s3_server(tmp_path_factory: pytest.TempPathFactory):
    with MotoS3Server(tmp_path_factory.mktemp("moto")) as server:
        yield server


@pytest.fixture
def archive(pipeline_env, s3_server, monkeypatch: pytest.MonkeyPatch) -> Archive:
    """The pipeline_env with PARQUET_BASE_DIR in a fresh bucket of the S3 server."""
    bucket = f"archive-{uuid.uuid4().hex[:10]}"
    s3_server.create_bucket(bucket)
    store = Archive(s3_server, bucket)
    settings = {**s3_server.env(), "PARQUET_BASE_DIR": store.uri}
    pipeline_env.env.update(settings)
    for key, value in settings.items():
        monkeypatch.setenv(key, value)
    return store


def ran(db: Path, task: str) -> list[date]:
    """Days a task ran successfully, from the run log beside `db` (one per working folder)."""
    runs = db.with_name("home_energy.runs.duckdb")
    if not runs.exists():
        return []
    rows = fetch(
        runs, f"select date from pipeline_runs where task = '{task}' and status = 'SUCCESS'"
    )
    return sorted(r[0] for r in rows)


def test_a_range_archives_to_the_bucket_loads_and_builds_and_a_rerun_changes_nothing(
    archive, pipeline_env
) -> None:
    days = recent_days(5)
    for day in days:
        pipeline_env.write(hourly_lines(day))
    command = ("RangeDaily", "--of", "DbtBuild", "--days-back", "5", "--local-scheduler")

    result = pipeline_env.cli(*command)
    assert result.returncode == 0, result.stderr

    for dataset in ("landing/power", "raw_meter_readings"):
        for day in days:
            manifest = archive.manifest(dataset, day)
            assert manifest["rows"] == 24
            assert archive.attempts(dataset, day) == {manifest["attempt"]}
            assert archive.rows(dataset, day) == 24
    assert not pipeline_env.parquet.exists()  # nothing archived on the local disk
    assert fetch(pipeline_env.duckdb, "select count(*) from raw_meter_readings") == [(120,)]
    built = fetch(pipeline_env.duckdb, "select date_jst from fct_daily_energy order by 1")
    assert [d for (d,) in built] == days

    check = pipeline_env.cli("-m", "pipeline", "check")
    assert f"ok    Parquet: {archive.uri}/landing/power writable" in check.stdout, check.stdout
    status = pipeline_env.cli("-m", "pipeline", "status", "--days", "5").stdout.splitlines()
    assert [line.split()[:3] for line in status[1:]] == [[str(d), "24", "24"] for d in days]

    def snapshot() -> tuple:
        markers = fetch(pipeline_env.duckdb, "select * from table_updates order by 1")
        return archive.objects(), markers, pipeline_env.duckdb.stat().st_ino

    before = snapshot()
    rerun = pipeline_env.cli(*command)
    assert rerun.returncode == 0, rerun.stderr
    assert snapshot() == before


def test_kill_during_a_partition_write_shows_no_partition_without_its_manifest(
    archive, pipeline_env
) -> None:
    landing = "landing/power"
    pipeline_env.write(hourly_lines(DAY))
    assert pipeline_env.cli("DuckLoadDay", "--date", str(DAY), "--local-scheduler").returncode == 0
    archived = archive.manifest(landing, DAY)
    # Late readings from a second meter, and the operator's request to extract the day again.
    pipeline_env.write(hourly_lines(DAY, source="meter2"))
    assert pipeline_env.cli("-m", "pipeline", "rebuild", "--date", str(DAY)).returncode == 0
    # A day never archived before.
    first = DAY + timedelta(days=1)
    pipeline_env.write(hourly_lines(first, hours=6))

    killed = {"PIPELINE_FAILPOINT": "partition.written"}
    for day in (DAY, first):
        result = pipeline_env.cli(
            "ExtractDay", "--date", str(day), "--local-scheduler", extra_env=killed
        )
        assert result.returncode == -signal.SIGKILL

    # The uploads happened, but without a manifest they are not a partition: the old day is
    # still the one readers find, and the new day does not exist yet.
    assert archive.manifest(landing, DAY) == archived
    assert len(archive.attempts(landing, DAY)) == 2
    assert archive.rows(landing, DAY) == 24
    assert archive.attempts(landing, first) and archive.manifest(landing, first) is None
    assert ran(pipeline_env.duckdb, "ExtractDay") == [DAY]  # only the first, whole run
    # Within the grace period (an hour by default) a run that lists the dataset leaves the
    # unnamed attempts alone: their writers might still be about to publish them.
    assert pipeline_env.cli("-m", "pipeline", "status", "--days", "1").returncode == 0
    assert len(archive.attempts(landing, DAY)) == 2 and archive.attempts(landing, first)

    no_grace = {"PARQUET_ATTEMPT_GRACE_S": "0"}
    for day in (DAY, first):
        result = pipeline_env.cli(
            "DuckLoadDay", "--date", str(day), "--local-scheduler", extra_env=no_grace
        )
        assert result.returncode == 0, result.stderr
    assert archive.rows(landing, DAY) == 48 and archive.rows("raw_meter_readings", DAY) == 48
    assert archive.rows(landing, first) == 6
    loaded = fetch(
        pipeline_env.duckdb,
        "select partition_date, row_count from table_updates where target_table = "
        "'raw_meter_readings' order by 1",
    )
    assert loaded == [(DAY, 48), (first, 6)]
    assert f"{archive.prefix}/{landing}/dt={DAY}/_REBUILD" not in archive.objects()

    # Any later run removes what no manifest names (the grace period is 0 here).
    again = pipeline_env.cli(
        "DuckLoadDay", "--date", str(DAY), "--local-scheduler", extra_env=no_grace
    )
    assert again.returncode == 0, again.stderr
    for dataset in (landing, "raw_meter_readings"):
        for day in (DAY, first):
            assert archive.attempts(dataset, day) == {archive.manifest(dataset, day)["attempt"]}
    assert not list(_staging_root().glob(f".tmp-{archive.bucket}_*"))


@pytest.mark.parametrize(
    ("change", "expected"),
    [
        ({"AWS_SECRET_ACCESS_KEY": "not-the-secret-1234"}, "refused the credentials"),
        ({"AWS_ACCESS_KEY_ID": "AKIANOSUCHKEY0000000"}, "refused the credentials"),
        ({"PARQUET_BASE_DIR": "s3://no-such-bucket-here/home"}, "has no bucket"),
        ({"S3_ENDPOINT_URL": "http://127.0.0.1:9"}, "is unreachable"),  # nothing listens
    ],
)
def test_wrong_credentials_a_missing_bucket_or_no_server_fail_in_one_line(
    archive, pipeline_env, change: dict[str, str], expected: str
) -> None:
    pipeline_env.write(hourly_lines(recent_days(1)[0]))
    result = pipeline_env.cli(
        "RangeDaily", "--of", "DbtBuild", "--days-back", "2", "--local-scheduler", extra_env=change
    )
    output = result.stdout + result.stderr
    assert result.returncode == 30  # a scheduling error: nothing ran
    lines = [line for line in output.splitlines() if expected in line]
    assert len(lines) == 1, output
    assert "Traceback" not in output
    assert "not-the-secret-1234" not in output
    assert not pipeline_env.duckdb.exists()

    check = pipeline_env.cli("-m", "pipeline", "check", extra_env=change)
    assert check.returncode == 1
    assert any(
        line.startswith("FAIL  Parquet:") and expected in line for line in check.stdout.splitlines()
    ), check.stdout


def test_two_workers_split_a_range_and_only_the_warehouse_worker_loads(
    archive, pipeline_env, luigid, tmp_path: Path
) -> None:
    days = recent_days(20)
    for day in days:
        pipeline_env.write(hourly_lines(day))
    # Two machines: each its own working folder (run log, and for one the warehouse).
    extractor_db = tmp_path / "extractor" / "duckdb" / "home_energy.duckdb"
    warehouse_db = tmp_path / "warehouse" / "duckdb" / "home_energy.duckdb"
    scheduler = ("--days-back", "20", "--scheduler-url", luigid.url, "--worker-wait-jitter", "0.5")
    on_extractor = {"DUCKDB_PATH": str(extractor_db), "PIPELINE_HOLDS_WAREHOUSE": "false"}
    extractor = pipeline_env.spawn(
        "RangeDaily",
        "--of",
        "ParquetDay",
        *scheduler,
        extra_env=on_extractor,
    )
    loader = pipeline_env.spawn(
        "RangeDaily",
        "--of",
        "DuckLoadDay",
        *scheduler,
        "--worker-keep-alive",
        "--worker-max-keep-alive-idle-duration",
        "60 seconds",
        extra_env={"DUCKDB_PATH": str(warehouse_db)},
    )
    outputs = [p.communicate(timeout=240) for p in (extractor, loader)]
    # 4: Luigi's "were being run by another worker", the work shared as intended.
    assert {extractor.returncode, loader.returncode} <= {0, 4}, outputs

    by_extractor = ran(extractor_db, "ExtractDay")
    by_loader = ran(warehouse_db, "ExtractDay")
    assert sorted(by_extractor + by_loader) == days  # every day extracted, none twice
    assert by_extractor and by_loader, "the range was not split between the workers"
    # The manifests agree: each landing day was written by the worker that logged it.
    writers = {d: archive.manifest("landing/power", d)["written_by"] for d in days}
    assert {d for d, w in writers.items() if w.endswith(f"/{extractor.pid}")} == set(by_extractor)
    assert {d for d, w in writers.items() if w.endswith(f"/{loader.pid}")} == set(by_loader)
    assert ran(warehouse_db, "DuckLoadDay") == days
    assert ran(extractor_db, "DuckLoadDay") == []
    assert not extractor_db.exists()  # the extraction machine has no warehouse at all
    loaded = fetch(warehouse_db, "select count(*) from raw_meter_readings")
    assert loaded == [(20 * 24,)]

    # Asked for the warehouse's tasks, the extraction worker refuses before touching anything.
    refused = pipeline_env.cli(
        "RangeDaily",
        "--of",
        "DuckLoadDay",
        "--days-back",
        "20",
        "--local-scheduler",
        extra_env=on_extractor,
    )
    assert refused.returncode == 30, refused.stderr
    assert "does not hold the DuckDB warehouse" in refused.stderr
    check = pipeline_env.cli("-m", "pipeline", "check", extra_env=on_extractor)
    assert check.returncode == 0, check.stdout
    assert "ok    DuckDB: not on this worker" in check.stdout
    assert not extractor_db.exists()
