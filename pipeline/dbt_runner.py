"""Run `dbt build` on the repository's dbt project, in-process, against one DuckDB file.

The seeds (tariffs and meter contracts, edited by the user) are loaded and tested when their
CSV files differ from the ones last built into the file, and skipped otherwise: reloading
seven unchanged tables and rerunning their fifty-odd tests would add seconds to every
nightly build. A failing test's message names its first failing rows.

dbt-duckdb keeps its DuckDB connection in a class-level "environment" that outlives the dbt
invocation (and with `keep_open`, the default in dbt-duckdb 1.11, never closes it). The
pipeline renames the DuckDB file to publish it, so after every build this module closes that
environment: the file is then free to rename, reopen or lock from another process.
"""

from __future__ import annotations

import gc
import hashlib
import json
import logging
import os
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import date
from pathlib import Path

import duckdb


@contextmanager
def garbage_collector_paused() -> Iterator[None]:
    """No automatic collection in the block: dbt's import and its runs make objects by the
    hundred thousand, and the collections they set off find little to free."""
    collecting = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if collecting:
            gc.enable()


_root_handlers = list(logging.getLogger().handlers)
# dbt's import makes about a hundred thousand objects that live as long as the process (its
# classes and their generated code). The garbage collector is kept out of them: paused while
# they are made (0.1 s of the import's 1.2 s), then frozen, so that neither a full collection
# nor the one at exit (0.3 s) scans them again. A cold daily build is 0.4 s faster.
with garbage_collector_paused():
    from dbt.adapters.duckdb.connections import DuckDBConnectionManager
    from dbt.artifacts.schemas.results import NodeResult, RunStatus, TestStatus
    from dbt.cli.main import dbtRunner, dbtRunnerResult

    gc.freeze()
# A dependency of dbt calls logging.basicConfig() on import, which would print every Luigi log
# line twice; the caller's logging stays as it was.
logging.getLogger().handlers[:] = _root_handlers

from pipeline.config import storage  # noqa: E402
from pipeline.database import has_table  # noqa: E402
from pipeline.errors import PipelineError  # noqa: E402

DBT_PROJECT_DIR = Path(__file__).resolve().parent.parent / "dbt"

# Statuses of dbt result nodes that fail a build (a test's error has RunStatus.Error's value).
_FAILED_STATUSES = frozenset({str(RunStatus.Error), str(TestStatus.Fail)})
# Enough of a failing node's message to name the cause, not a whole SQL dump.
_MESSAGE_CHARS = 400
# A failing test's rows quoted in the error, so that bad seed data is found by its row.
_FAILING_ROWS = 3
# The table in the built file that records which seed files were loaded into it.
SEED_STATE_TABLE = "dbt_seed_state"


class DbtBuildError(PipelineError):
    """dbt build failed; the message names the failing models and tests."""


@dataclass(frozen=True)
class DbtBuildResult:
    models: int
    tests: int


def run_dbt_build(
    duckdb_path: Path,
    *,
    start_date: date | None = None,
    end_date: date | None = None,
    full_refresh: bool = False,
    time_zone: str | None = None,
    memory_limit: str | None = None,
    project_dir: Path = DBT_PROJECT_DIR,
) -> DbtBuildResult:
    """Build every model and run every test of the project on `duckdb_path`.

    With `start_date` (and `end_date`, default the same day) the energy marts rebuild only
    those local days and their neighbours; without, or with `full_refresh`, everything.
    `time_zone` overrides the project's var `tz` (the pipeline time zone, default Asia/Tokyo);
    `memory_limit` is DuckDB's for dbt's queries, by default `[storage] duckdb_memory_limit`;
    the profile gets it, and the path, from this function (profiles.yml's defaults are only for
    running dbt by hand, and a test keeps them equal to the pipeline's).
    `project_dir` is the repository's dbt project unless a test builds a copy (other seeds).
    dbt's target and log folders go next to the DuckDB file, not into the repository.
    """
    duckdb_path = Path(duckdb_path).resolve()
    work_dir = duckdb_path.parent / "dbt"
    args = [
        "build",
        "--no-use-colors",
        # No manifest.json or run_results.json: nothing reads them, and writing them costs a
        # daily build about 0.3 s (its partial-parse state is saved all the same).
        "--no-write-json",
        "--project-dir",
        str(project_dir),
        "--profiles-dir",
        str(project_dir),
        "--target-path",
        str(work_dir / "target"),
        "--log-path",
        str(work_dir / "logs"),
        "--vars",
        json.dumps({"tz": time_zone} if time_zone is not None else {}),
    ]
    if full_refresh:
        args.append("--full-refresh")
    seeds = seed_fingerprint(project_dir)
    if not full_refresh and _loaded_seeds(duckdb_path) == seeds:
        args += ["--exclude", "resource_type:seed"]

    profile_env = {
        "DUCKDB_PATH": str(duckdb_path),
        "DUCKDB_MEMORY_LIMIT": memory_limit or storage().duckdb_memory_limit,
        **_loaded_days(start_date, end_date),
    }
    # Paused in the run too: a daily build is 0.1 s faster, for 16 MB more at its peak.
    with _environment(**profile_env), garbage_collector_paused():
        try:
            outcome = dbtRunner().invoke(args)
        finally:
            _close_duckdb_environment()
    result = _summarise(outcome, duckdb_path)
    _record_loaded_seeds(duckdb_path, seeds)
    return result


def seed_fingerprint(project_dir: Path) -> str:
    """sha256 over the names and contents of the project's seed files."""
    digest = hashlib.sha256()
    for path in sorted((Path(project_dir) / "seeds").glob("*.csv")):
        digest.update(path.name.encode() + b"\0" + path.read_bytes() + b"\0")
    return digest.hexdigest()


def _loaded_seeds(duckdb_path: Path) -> str | None:
    if not duckdb_path.exists():
        return None
    with duckdb.connect(str(duckdb_path), read_only=True) as con:
        if not has_table(con, SEED_STATE_TABLE):
            return None
        row = con.execute(f"select fingerprint from {SEED_STATE_TABLE}").fetchone()
    return row[0] if row else None


def _record_loaded_seeds(duckdb_path: Path, fingerprint: str) -> None:
    with duckdb.connect(str(duckdb_path)) as con:
        con.execute(
            f"create or replace table {SEED_STATE_TABLE} as select ? as fingerprint", [fingerprint]
        )


def _loaded_days(start_date: date | None, end_date: date | None) -> dict[str, str]:
    """The days of an incremental run, for the macro `loaded_days` (empty: build everything).

    Environment variables, not dbt vars: dbt parses the whole project again whenever its vars
    differ from the last run's, which they would every night; the macro reads these only when
    the models run, so the parse is reused.
    """
    if end_date is not None and start_date is None:
        raise ValueError("end_date needs a start_date")
    if start_date is not None and end_date is not None and end_date < start_date:
        raise ValueError(f"end_date {end_date} is before start_date {start_date}")
    return {
        "HOME_ENERGY_START_DATE": start_date.isoformat() if start_date else "",
        "HOME_ENERGY_END_DATE": (end_date or start_date).isoformat() if start_date else "",
    }


@contextmanager
def _environment(**values: str) -> Iterator[None]:
    """Set environment variables for the duration of the block, then restore them."""
    saved = {name: os.environ.get(name) for name in values}
    os.environ.update(values)
    try:
        yield
    finally:
        for name, value in saved.items():
            if value is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = value


def _close_duckdb_environment() -> None:
    """Close the DuckDB database dbt-duckdb keeps open between invocations.

    `close_all_connections()` only drops the reference; closing the environment first closes
    the DuckDB connection (and its cursors) now, releasing the file and its lock.
    """
    with DuckDBConnectionManager._LOCK:
        environment = DuckDBConnectionManager._ENV
        if environment is not None:
            environment.close()
        DuckDBConnectionManager.close_all_connections()


def _summarise(outcome: dbtRunnerResult, duckdb_path: Path) -> DbtBuildResult:
    if outcome.exception is not None:
        raise DbtBuildError(f"dbt build did not run: {outcome.exception}")
    node_results = list(getattr(outcome.result, "results", None) or [])
    failures = [
        _describe_failure(result, duckdb_path)
        for result in node_results
        if str(result.status) in _FAILED_STATUSES
    ]
    if failures or not outcome.success:
        skipped = sum(str(result.status) == str(RunStatus.Skipped) for result in node_results)
        detail = "; ".join(failures) or "no failing node reported (see dbt's log)"
        raise DbtBuildError(f"dbt build failed: {detail} ({skipped} nodes skipped)")
    return DbtBuildResult(
        models=_count(node_results, "model"),
        tests=_count(node_results, "test"),
    )


def _describe_failure(result: NodeResult, duckdb_path: Path) -> str:
    """`<model|test> <name>: <dbt's message>`, on one line: a runtime error's cause is on the
    lines after its first ("Runtime Error in model x (path)"). A failed test adds its first
    failing rows."""
    node = result.node
    lines = [line.strip() for line in (result.message or "").splitlines() if line.strip()]
    message = " ".join(lines[:4]) or str(result.status)
    described = f"{node.resource_type} {node.name}: {message[:_MESSAGE_CHARS]}"
    compiled_code = getattr(node, "compiled_code", None)
    if str(result.status) == str(TestStatus.Fail) and compiled_code:
        described += f"; failing rows: {_failing_rows(duckdb_path, compiled_code)}"
    return described


def _failing_rows(duckdb_path: Path, test_sql: str) -> str:
    """The first rows a failed test's query returns, as `column=value` lists."""
    try:
        with duckdb.connect(str(duckdb_path), read_only=True) as con:
            cursor = con.execute(f"select * from ({test_sql}) limit {_FAILING_ROWS}")
            names = [column[0] for column in cursor.description]
            rows = cursor.fetchall()
    except duckdb.Error as error:  # the rows are a courtesy: the failure is reported anyway
        return f"(not read: {str(error).splitlines()[0]})"
    return " | ".join(
        ", ".join(f"{name}={value}" for name, value in zip(names, row, strict=True)) for row in rows
    )


def _count(node_results: list[NodeResult], resource_type: str) -> int:
    return sum(str(result.node.resource_type) == resource_type for result in node_results)
