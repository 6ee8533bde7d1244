"""What the pipeline benchmarks share: cold commands timed with their peak memory, a private
influxd, the pipeline's environment, and the summary table.

A command is timed from its spawn to its exit, so interpreter start and imports count, as they
do for cron. Its peak RSS is the kernel's high-water mark of the process, reported by GNU time.
"""

from __future__ import annotations

import compileall
import contextlib
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import date, datetime, timedelta
from pathlib import Path
from subprocess import Popen
from typing import IO
from zoneinfo import ZoneInfo

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from contracts.influx import InfluxSettings  # noqa: E402
from devstack.servers import InfluxServer  # noqa: E402
from pipeline.seed import seed  # noqa: E402

# The cold commands run the repository's modules. Installed, they are compiled (pip compiles
# what it installs, scripts/bootstrap the editable sources); compiled here too, so that a source
# edited since bootstrap is not compiled again by every command timed (about 0.03 s each).
for package in ("contracts", "edge", "gateway", "pipeline"):
    compileall.compile_dir(REPO / package, quiet=1)

PYTHON = sys.executable
LUIGI = str(Path(sys.executable).with_name("luigi"))
GNU_TIME = "/usr/bin/time"  # Debian package `time`
TZ = "Asia/Tokyo"
# The benchmarks configure the pipeline through these alone; inherited values would leak in.
PIPELINE_VARIABLES = ("INFLUX_", "DUCKDB_", "PARQUET_", "LUIGI_", "TZ", "SOURCE_DEFAULT")


Row = tuple[str, str, str]  # a summary line: measure, figure, note

# The floor of a backfill (issue 13): the least work that archives and loads local days with the
# same libraries and no Luigi. Per local day, InfluxDB CSV in windows of `step` (a whole day:
# one query) -> Arrow -> one Parquet file in the day's `dt=` folder; then one DuckDB statement
# loads every day. Answers uncompressed, as the pipeline asks by default: requests' default gzip
# made InfluxDB spend more than half of each query compressing; dictionary pages for the source
# only, as the pipeline writes them (faster and smaller). argv: influx url, database,
# measurement, time zone, first day, days, step seconds, parquet folder, duckdb file.
FLOOR_SCRIPT = """
import io, sys
from datetime import date, datetime, time, timedelta
from pathlib import Path
from zoneinfo import ZoneInfo
import duckdb, pyarrow as pa, pyarrow.csv as pacsv, pyarrow.parquet as pq, requests

url, db, measurement, tz, first, days, step, folder, duck = sys.argv[1:]
zone, step = ZoneInfo(tz), int(step) * 10**9
fields = ["instant_power_w", "energy_import_kwh", "energy_export_kwh"]
types = {"time": pa.int64(), "source": pa.string(), **dict.fromkeys(fields, pa.float64())}
schema = pa.schema([("time", pa.timestamp("ms", tz="UTC")), ("source", pa.string()),
                    *((f, pa.float64()) for f in fields)])
session = requests.Session()
session.headers.update({"Accept": "application/csv", "Accept-Encoding": "identity"})

def ns(day):
    return int(datetime.combine(day, time(), tzinfo=zone).timestamp()) * 10**9

for n in range(int(days)):
    day = date.fromisoformat(first) + timedelta(days=n)
    start, end = ns(day), ns(day + timedelta(days=1))
    partition = Path(folder) / f"dt={day}"
    partition.mkdir(parents=True)
    with pq.ParquetWriter(partition / "part-0.parquet", schema, compression="zstd",
                          use_dictionary=["source"]) as writer:
        for lo in range(start, end, step):
            q = (f'SELECT {", ".join(fields)}, "source" FROM "{measurement}" '
                 f"WHERE time >= {lo} AND time < {min(lo + step, end)}")
            answer = session.post(f"{url}/query", params={"q": q, "db": db, "epoch": "ms"},
                                  timeout=300)
            answer.raise_for_status()
            if not answer.content.strip():
                continue
            table = pacsv.read_csv(io.BytesIO(answer.content), convert_options=pacsv.ConvertOptions(
                column_types=types, include_columns=list(types), include_missing_columns=True))
            writer.write_table(table.cast(schema))
with duckdb.connect(duck) as con:
    con.execute(
        "create table raw_meter_readings as select time as ts_utc, timezone(?, time) as ts_jst,"
        " source, instant_power_w, energy_import_kwh, energy_export_kwh, now() as ingested_at"
        " from read_parquet(?) order by source, ts_utc", [tz, f"{folder}/dt=*/*.parquet"])
    rows = con.execute("select count(*) from raw_meter_readings").fetchone()[0]
print(rows, "rows")
"""


@dataclass(frozen=True)
class Run:
    seconds: float
    peak_rss_mib: float


class CommandFailed(RuntimeError):
    pass


def exit_cleanly_on_sigterm() -> None:
    """SIGTERM unwinds like Ctrl-C, so `with` blocks stop influxd and remove temp folders."""
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(128 + signal.SIGTERM))


def run_cold(
    cmd: list[str], env: dict[str, str], log: Path, timeout_s: float, cwd: Path = REPO
) -> Run:
    """Run `cmd` from the repository (luigi.cfg is read from there), or from another checkout
    `cwd`; raise if it fails.

    The peak RSS is GNU time's `%M`, not `os.wait4` here: a child inherits the high-water mark
    of the process that forked it (Linux carries it across fork and exec), so this process,
    fat from seeding, would lend its own peak to every command it starts.
    """
    peak_file = log.with_suffix(".maxrss")
    with log.open("wb") as out:
        started = time.perf_counter()
        process = spawn_timed(cmd, env, out, peak_file, cwd)
        killer = threading.Timer(timeout_s, _kill_group, (process.pid,))
        killer.start()
        try:
            _, status, _ = os.wait4(process.pid, 0)  # blocking: no polling error in the time
        finally:
            killer.cancel()
        elapsed = time.perf_counter() - started
    process.returncode = os.waitstatus_to_exitcode(status)
    if process.returncode != 0:
        tail = "\n".join(log.read_text(errors="replace").splitlines()[-15:])
        reason = "timed out" if elapsed >= timeout_s else f"exited {process.returncode}"
        raise CommandFailed(f"{' '.join(cmd[:6])} ... {reason}; log {log}:\n{tail}")
    return Run(seconds=elapsed, peak_rss_mib=peak_rss_mib(peak_file))


def spawn_timed(
    cmd: list[str], env: dict[str, str], out: IO[bytes], peak_file: Path, cwd: Path = REPO
) -> Popen:
    """Start `cmd` from `cwd` (the repository) under GNU time, which writes its peak RSS (KiB)
    to `peak_file` when it exits; output to `out`."""
    if not Path(GNU_TIME).exists():
        raise RuntimeError(f"{GNU_TIME} is missing: apt-get install -y time")
    return subprocess.Popen(
        [GNU_TIME, "-f", "%M", "-o", str(peak_file), *cmd],
        cwd=cwd,
        env=env,
        stdin=subprocess.DEVNULL,
        stdout=out,
        stderr=subprocess.STDOUT,
        start_new_session=True,  # a timeout kills the command with its timer
    )


def peak_rss_mib(peak_file: Path) -> float:
    return int(peak_file.read_text().split()[-1]) / 1024


def _kill_group(pid: int) -> None:
    with contextlib.suppress(ProcessLookupError):
        os.killpg(pid, signal.SIGKILL)


def run_floor(
    influx: InfluxServer, workdir: Path, first: date, days: int, step: timedelta, timeout_s: float
) -> Run:
    """FLOOR_SCRIPT over `days` local days from `first`, a cold process in a new `workdir`."""
    workdir.mkdir(parents=True)
    args = [
        *(influx.url, "home_energy", "power", TZ, first.isoformat(), str(days)),
        *(str(int(step.total_seconds())), str(workdir / "parquet"), str(workdir / "floor.duckdb")),
    ]
    return run_cold(
        [PYTHON, "-c", FLOOR_SCRIPT, *args],
        pipeline_env(influx, workdir),
        workdir / "floor.log",
        timeout_s,
    )


def luigi_command(task: str, *args: str) -> list[str]:
    return [LUIGI, "--module", "pipeline", task, *args, "--local-scheduler"]


def pipeline_env(influx: InfluxServer, workdir: Path) -> dict[str, str]:
    """The environment of one pipeline installation: its own Parquet folder and DuckDB file."""
    inherited = {k: v for k, v in os.environ.items() if not k.startswith(PIPELINE_VARIABLES)}
    return {
        **inherited,
        **influx.env(),
        "PARQUET_BASE_DIR": str(workdir / "parquet"),
        "DUCKDB_PATH": str(workdir / "duckdb" / "home_energy.duckdb"),
        "TZ": TZ,
    }


@contextmanager
def influx_server(workdir: Path) -> Iterator[InfluxServer]:
    server = InfluxServer(workdir / "influxd").start()
    try:
        yield server
    finally:
        server.stop()


def seed_readings(
    influx: InfluxServer, first: date, days: int, interval: timedelta, sources: list[str]
) -> tuple[int, float]:
    """Sample readings covering `days` local days from `first`; (readings, seconds)."""
    start = datetime.combine(first, datetime.min.time(), tzinfo=ZoneInfo(TZ))
    count = int(timedelta(days=days) / interval)
    settings = InfluxSettings(url=influx.url)
    started = time.perf_counter()
    written = seed(settings, start=start, interval=interval, count=count, sources=sources, tz=TZ)
    return written, time.perf_counter() - started


def days_ago(n: int) -> date:
    """A local day `n` days back: past, and older than the late-data lookback for n > 7."""
    return datetime.now(ZoneInfo(TZ)).date() - timedelta(days=n)


def median(values: list[float]) -> float:
    ordered = sorted(values)
    middle = len(ordered) // 2
    return ordered[middle] if len(ordered) % 2 else (ordered[middle - 1] + ordered[middle]) / 2


def load_average() -> str:
    return f"{os.getloadavg()[0]:.1f}"


def verdict(ok: bool) -> str:
    return "OK" if ok else "MISSED"


def print_table(title: str, rows: list[Row]) -> None:
    """Rows of (measure, figure, goal/verdict), aligned."""
    widths = [max(len(row[i]) for row in rows) for i in range(3)]
    print(f"\n{title}")
    for row in rows:
        print("  " + "  ".join(cell.ljust(width) for cell, width in zip(row, widths, strict=True)))
