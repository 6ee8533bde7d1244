"""The pipeline spine against a real influxd and real DuckDB: days, reruns, replacements, errors."""

from __future__ import annotations

import glob
import subprocess
import sys
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from zoneinfo import ZoneInfo

import duckdb
import pyarrow.parquet as pq
import pytest
import requests
from conftest import hourly_lines, quarter_hour_lines

from pipeline import extract
from pipeline.days import day_window_utc
from pipeline.extract import InfluxSource
from pipeline.tasks import DuckLoadDay, ExtractDay, ParquetDay

DAY = date(2025, 12, 17)


def ms(ts: str) -> int:
    return int(datetime.fromisoformat(ts).astimezone(UTC).timestamp() * 1000)


def raw_rows(env, day: date = DAY) -> list[tuple]:
    with duckdb.connect(str(env.duckdb), read_only=True) as con:
        con.execute("set TimeZone = 'UTC'")
        window = day_window_utc(day, ZoneInfo("Asia/Tokyo"))
        return con.execute(
            "select * from raw_meter_readings where ts_utc >= ? and ts_utc < ? "
            "order by source, ts_utc",
            list(window),
        ).fetchall()


def partition(env, dataset: str, day: date = DAY) -> Path:
    return env.parquet / dataset / f"dt={day.isoformat()}"


def test_day_window_is_local_and_half_open() -> None:
    tokyo = ZoneInfo("Asia/Tokyo")
    start, end = day_window_utc(DAY, tokyo)
    assert start == datetime(2025, 12, 16, 15, tzinfo=UTC)
    assert end == datetime(2025, 12, 17, 15, tzinfo=UTC)
    berlin = ZoneInfo("Europe/Berlin")
    spring = day_window_utc(date(2025, 3, 30), berlin)
    autumn = day_window_utc(date(2025, 10, 26), berlin)
    assert spring[1] - spring[0] == timedelta(hours=23)
    assert autumn[1] - autumn[0] == timedelta(hours=25)


def test_midnight_boundary_readings_land_in_the_right_day(pipeline_env) -> None:
    pipeline_env.write(
        [
            f"power,source=meter1 instant_power_w=1 {ms('2025-12-17T14:59:59.999+00:00')}",
            f"power,source=meter1 instant_power_w=2 {ms('2025-12-17T15:00:00.000+00:00')}",
        ]
    )
    assert pipeline_env.build(DuckLoadDay(date=DAY), DuckLoadDay(date=DAY + timedelta(days=1)))
    first, second = raw_rows(pipeline_env, DAY), raw_rows(pipeline_env, DAY + timedelta(days=1))
    assert [r[3] for r in first] == [1.0]
    assert [r[3] for r in second] == [2.0]
    assert first[0][1] == datetime(2025, 12, 17, 23, 59, 59, 999000)  # ts_jst, naive wall clock
    assert second[0][1] == datetime(2025, 12, 18, 0, 0)


def test_dst_days_have_23_and_25_hours_of_readings(pipeline_env, monkeypatch) -> None:
    monkeypatch.setenv("TZ", "Europe/Berlin")
    spring, autumn = date(2025, 3, 30), date(2025, 10, 26)
    lines = []
    for day in (spring, autumn):  # hourly readings from the day before to the day after
        t = ms(f"{day - timedelta(days=1)}T00:00:00+00:00")
        lines += [f"power instant_power_w=100 {t + h * 3_600_000}" for h in range(72)]
    pipeline_env.write(lines)
    assert pipeline_env.build(ParquetDay(date=spring), ParquetDay(date=autumn))
    for day, hours in ((spring, 23), (autumn, 25)):
        table = pq.read_table(partition(pipeline_env, "raw_meter_readings", day))
        assert table.num_rows == hours
        assert set(table["source"].to_pylist()) == {"meter1"}  # the default source


def test_canonical_partition_layout(pipeline_env) -> None:
    pipeline_env.write(
        [
            f"power,source=b instant_power_w=5 {ms('2025-12-17T01:00:00+00:00')}",
            f"power,source=a energy_import_kwh=7 {ms('2025-12-17T02:00:00+00:00')}",
            f"power,source=a instant_power_w=3 {ms('2025-12-17T01:00:00+00:00')}",
            # untagged and tagged with the default source at the same instant: one reading
            f"power instant_power_w=9 {ms('2025-12-17T03:00:00+00:00')}",
            f"power,source=meter1 instant_power_w=9 {ms('2025-12-17T03:00:00+00:00')}",
        ]
    )
    assert pipeline_env.build(ParquetDay(date=DAY))
    table = pq.read_table(partition(pipeline_env, "raw_meter_readings"))
    assert table.schema.names == [
        "ts_utc",
        "ts_jst",
        "source",
        "instant_power_w",
        "energy_import_kwh",
        "energy_export_kwh",
        "ingested_at",
    ]
    assert str(table.schema.field("ts_utc").type) == "timestamp[us, tz=UTC]"
    assert str(table.schema.field("ts_jst").type) == "timestamp[us]"
    assert str(table.schema.field("ingested_at").type) == "timestamp[us, tz=UTC]"
    rows = table.to_pylist()
    assert [(r["source"], r["ts_utc"].hour) for r in rows] == [
        ("a", 1),
        ("a", 2),
        ("b", 1),
        ("meter1", 3),
    ]
    # A field the source did not send is NULL, never 0.0.
    assert rows[0]["energy_import_kwh"] is None and rows[1]["instant_power_w"] is None
    meta = pq.ParquetFile(next(partition(pipeline_env, "raw_meter_readings").glob("*.parquet")))
    assert meta.metadata.row_group(0).column(0).compression == "ZSTD"


@pytest.fixture
def answers(monkeypatch) -> list[tuple[str, requests.Response]]:
    """Every InfluxDB query this test's pipeline sends, with its answer, from a new source."""
    monkeypatch.setattr(extract, "_shared", {})  # no day counts or session from another test
    seen: list[tuple[str, requests.Response]] = []
    answer = InfluxSource._query

    def recorded(source: InfluxSource, q: str, accept: str = "application/json"):
        seen.append((q, response := answer(source, q, accept)))
        return response

    monkeypatch.setattr(InfluxSource, "_query", recorded)
    return seen


def test_a_day_that_fits_a_window_is_one_query_and_a_larger_day_is_cut(
    pipeline_env, monkeypatch, answers
) -> None:
    small, large = DAY, DAY + timedelta(days=1)
    pipeline_env.write(hourly_lines(small) + quarter_hour_lines(large))  # 24 and 96 readings
    monkeypatch.setenv("INFLUX_WINDOW_ROWS", "30")
    assert pipeline_env.build(ExtractDay(date=small))
    assert len(answers) == 1 and answers[0][0].endswith(" LIMIT 31")  # no count

    answers.clear()
    assert pipeline_env.build(ExtractDay(date=large))
    probe, count, *windows = [q for q, _ in answers]
    assert probe.endswith(" LIMIT 31") and "count(" in count
    assert len(windows) == 4 and not any("LIMIT" in q for q in windows)  # 96 in windows of 30
    for day, readings in ((small, 24), (large, 96)):
        landing = pq.read_table(partition(pipeline_env, "landing/power", day)).column("time")
        assert len(landing) == len(set(landing.to_pylist())) == readings
        assert landing.to_pylist() == sorted(landing.to_pylist())


@pytest.mark.parametrize("compress, encoding", [("false", None), ("true", "gzip")])
def test_influxdb_answers_are_compressed_only_when_asked(
    pipeline_env, monkeypatch, answers, compress: str, encoding: str | None
) -> None:
    pipeline_env.write(hourly_lines(DAY))
    monkeypatch.setenv("INFLUX_COMPRESS_ANSWERS", compress)
    assert pipeline_env.build(ExtractDay(date=DAY))
    assert answers and {r.headers.get("Content-Encoding") for _, r in answers} == {encoding}
    assert pq.read_table(partition(pipeline_env, "landing/power")).num_rows == 24


def test_rerun_changes_nothing(pipeline_env) -> None:
    pipeline_env.write(quarter_hour_lines(DAY))
    assert pipeline_env.build(DuckLoadDay(date=DAY))
    before = snapshot(pipeline_env)
    assert pipeline_env.build(DuckLoadDay(date=DAY))
    assert snapshot(pipeline_env) == before
    assert len(raw_rows(pipeline_env)) == 96


def snapshot(env) -> tuple:
    files = sorted(
        (str(p.relative_to(env.parquet)), p.stat().st_mtime_ns, p.read_bytes())
        for p in env.parquet.rglob("*")
        if p.is_file()
    )
    with duckdb.connect(str(env.duckdb), read_only=True) as con:
        markers = con.execute("select * from table_updates order by update_id").fetchall()
    return files, markers, raw_rows(env), env.duckdb.stat().st_ino


def test_source_change_replaces_the_day_exactly(pipeline_env) -> None:
    pipeline_env.write(quarter_hour_lines(DAY))
    assert pipeline_env.build(DuckLoadDay(date=DAY))
    # The source changes: one reading deleted, two late readings arrive, a value corrected.
    start = int(day_window_utc(DAY, ZoneInfo("Asia/Tokyo"))[0].timestamp() * 1000)
    pipeline_env.influx.query(
        f"DELETE FROM power WHERE time = {(start + 900_000) * 1_000_000}", db="home_energy"
    )
    pipeline_env.write(
        [
            f"power,source=meter2 instant_power_w=50 {start + 60_000}",
            f"power,source=meter2 instant_power_w=60 {start + 120_000}",
            f"power,source=meter1 instant_power_w=1234,energy_import_kwh=100 {start}",
        ]
    )
    result = pipeline_env.cli("-m", "pipeline", "rebuild", "--date", DAY.isoformat())
    assert result.returncode == 0, result.stderr
    assert pipeline_env.build(DuckLoadDay(date=DAY))
    rows = raw_rows(pipeline_env)
    assert len(rows) == 96 - 1 + 2
    assert sorted({r[2] for r in rows}) == ["meter1", "meter2"]
    assert rows[0][3] == 1234.0
    assert len({(r[2], r[0]) for r in rows}) == len(rows)  # no duplicates
    with duckdb.connect(str(pipeline_env.duckdb), read_only=True) as con:
        assert con.execute("select count(*) from raw_meter_readings").fetchone()[0] == 97


def test_past_day_without_readings_is_an_empty_partition(pipeline_env, caplog) -> None:
    # The measurement exists (readings on another day): a database without it is a
    # configuration error, not an empty day (tests/test_data_safety.py).
    pipeline_env.write(quarter_hour_lines(DAY + timedelta(days=3))[:1])
    assert pipeline_env.build(DuckLoadDay(date=DAY))
    assert "no readings" in caplog.text
    assert pq.read_table(partition(pipeline_env, "raw_meter_readings")).num_rows == 0
    assert raw_rows(pipeline_env) == []
    assert DuckLoadDay(date=DAY).complete()


def test_batched_days_publish_once(pipeline_env, caplog) -> None:
    days = [DAY + timedelta(days=i) for i in range(3)]
    for day in days:
        pipeline_env.write(quarter_hour_lines(day))
    span = f"{days[0]}-{days[-1] + timedelta(days=1)}"  # Luigi's spans end exclusive
    batch = DuckLoadDay(date=DuckLoadDay.date.parse(span))
    assert pipeline_env.build(batch)
    with duckdb.connect(str(pipeline_env.duckdb), read_only=True) as con:
        assert con.execute("select count(*) from raw_meter_readings").fetchone()[0] == 3 * 96
    assert caplog.text.count(f"published {pipeline_env.duckdb}") == 1
    assert all(DuckLoadDay(date=d).complete() for d in days)
    assert DuckLoadDay.bulk_complete(iter(days)) == days


@pytest.mark.parametrize("bad", ["2025-13-45", "yesterday", "2999-01-01", "today"])
def test_wrong_date_is_refused(pipeline_env, bad: str) -> None:
    if bad == "today":
        bad = datetime.now(ZoneInfo("Asia/Tokyo")).date().isoformat()
    result = pipeline_env.cli("DuckLoadDay", "--date", bad, "--local-scheduler")
    assert result.returncode != 0
    assert f"--date {bad}" in result.stderr or f"--date '{bad}'" in result.stderr
    assert not pipeline_env.parquet.exists()


def test_influx_down_is_one_clear_error(pipeline_env) -> None:
    result = pipeline_env.cli(
        "DuckLoadDay",
        "--date",
        DAY.isoformat(),
        "--local-scheduler",
        extra_env={"INFLUX_URL": "http://127.0.0.1:9"},
    )
    assert result.returncode == 40, result.stderr
    assert "InfluxDB at http://127.0.0.1:9 (database 'home_energy') is unreachable" in result.stderr
    assert glob.glob(str(pipeline_env.parquet / "*" / "dt=*")) == []


def test_wrong_credentials_are_one_clear_error(pipeline_env, tmp_path) -> None:
    from devstack.servers import InfluxServer

    with InfluxServer(tmp_path / "secured", auth=("admin", "s3cret-pw")) as secured:
        result = pipeline_env.cli(
            "ExtractDay",
            "--date",
            DAY.isoformat(),
            "--local-scheduler",
            extra_env={**secured.env(), "INFLUX_PASSWORD": "wrong-pw"},
        )
    assert result.returncode == 40
    assert "refused the credentials (HTTP 401)" in result.stderr
    assert "wrong-pw" not in result.stderr + result.stdout


def test_duckdb_locked_by_another_process_is_one_clear_error(pipeline_env) -> None:
    pipeline_env.write(quarter_hour_lines(DAY))
    assert pipeline_env.build(ParquetDay(date=DAY))
    pipeline_env.duckdb.parent.mkdir(parents=True, exist_ok=True)
    holder = subprocess.Popen(
        [
            sys.executable,
            "-c",
            "import duckdb, sys, time; c = duckdb.connect(sys.argv[1]); "
            "c.execute('create table t(x int)'); print('ready', flush=True); time.sleep(60)",
            str(pipeline_env.duckdb),
        ],
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert holder.stdout.readline().strip() == "ready"
        result = pipeline_env.cli("DuckLoadDay", "--date", DAY.isoformat(), "--local-scheduler")
    finally:
        holder.kill()
        holder.wait()
    assert result.returncode != 0
    assert f"DuckDB file {pipeline_env.duckdb} is locked by another process" in result.stderr


def test_token_is_sent_as_authorization_header_and_never_logged(pipeline_env) -> None:
    """InfluxDB 2's v1 API takes `Authorization: Token ...`; no InfluxDB 2 runs here, so a
    loopback HTTP server records what the pipeline sends and answers 401 as InfluxDB 2 would."""
    import http.server
    import threading

    seen: list[str | None] = []

    class Recorder(http.server.BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            seen.append(self.headers.get("Authorization"))
            self.send_response(401)
            self.send_header("Content-Type", "application/json")
            self.end_headers()
            self.wfile.write(b'{"code":"unauthorized","message":"unauthorized access"}')

        do_POST = do_GET

        def log_message(self, *args: object) -> None:
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Recorder)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        result = pipeline_env.cli(
            "ExtractDay",
            "--date",
            DAY.isoformat(),
            "--local-scheduler",
            extra_env={
                "INFLUX_URL": f"http://127.0.0.1:{server.server_address[1]}",
                "INFLUX_TOKEN": "tok-abc123",
            },
        )
    finally:
        server.shutdown()
    assert seen and set(seen) == {"Token tok-abc123"}
    assert result.returncode == 40
    assert "refused the credentials" in result.stderr
    assert "tok-abc123" not in result.stderr + result.stdout
