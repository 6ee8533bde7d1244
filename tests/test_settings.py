"""Settings: one reader per process, every variable in the README's table, a bad value refused in
one line by each process, and a setting from each layer (luigi.cfg, environment, flag) reaching
every consumer, dbt included. Luigi's own scheduler flags are not overridden by luigi.cfg."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import urllib.parse
import urllib.request
from collections.abc import Callable
from datetime import date
from pathlib import Path
from typing import Any

import duckdb
import luigi
import pytest
import yaml
from conftest import REPO, minute_lines

from contracts.settings import DUCKDB_PATH_DEFAULT, TZ_DEFAULT
from pipeline import config

DAY = date(2025, 12, 17)
# Not a size DuckDB can parse: dbt fails naming it, which proves the value reached dbt's DuckDB.
UNPARSABLE_LIMIT = "7 parsecs"


@pytest.mark.parametrize("layer", ["luigi.cfg", "environment", "flag"])
def test_duckdb_memory_limit_reaches_dbt_from_every_layer(pipeline_env, tmp_path, layer) -> None:
    pipeline_env.write(minute_lines(96, DAY))
    load = pipeline_env.cli("DuckLoadDay", "--date", str(DAY), "--local-scheduler")
    assert load.returncode == 0, load.stderr
    flags: list[str] = []
    extra_env: dict[str, str] = {}
    if layer == "luigi.cfg":
        cfg = tmp_path / "override.cfg"
        cfg.write_text(f"[storage]\nduckdb_memory_limit = {UNPARSABLE_LIMIT}\n")
        extra_env["LUIGI_CONFIG_PATH"] = str(cfg)  # read after the repository's luigi.cfg
        pipeline_env.env.pop("DUCKDB_MEMORY_LIMIT", None)
    elif layer == "environment":
        extra_env["DUCKDB_MEMORY_LIMIT"] = UNPARSABLE_LIMIT
    else:
        flags = ["--storage-duckdb-memory-limit", UNPARSABLE_LIMIT]

    result = pipeline_env.cli(
        "DbtBuild", "--date", str(DAY), "--local-scheduler", *flags, extra_env=extra_env
    )
    assert result.returncode == 40
    assert "dbt build did not run" in result.stderr
    assert "Unknown unit for memory: 'parsecs'" in result.stderr


def test_scheduler_host_and_port_flags_reach_that_luigid(pipeline_env, luigid) -> None:
    pipeline_env.write(minute_lines(96, DAY))
    port = urllib.parse.urlsplit(luigid.url).port
    result = pipeline_env.cli(
        "ExtractDay",
        "--date",
        str(DAY),
        "--scheduler-host",
        "127.0.0.1",
        "--scheduler-port",
        str(port),
    )
    assert result.returncode == 0, result.stderr
    query = urllib.parse.quote(json.dumps({"status": "DONE", "upstream_status": "", "search": ""}))
    with urllib.request.urlopen(f"{luigid.url}/api/task_list?data={query}", timeout=10) as resp:
        done = json.load(resp)["response"]
    assert any(task.startswith("ExtractDay") for task in done), done


# --- the README's table against the code ----------------------------------------------------------

# How the readers name a variable: an Environment method (gateway, edge, contracts), a
# luigi.Config parameter's env= (pipeline), a raw os.environ read, dbt's env_var().
READS = [
    re.compile(
        r'\benv\.(?:text|optional|path|integer|number|flag|choice|zone|log_level)\(\s*"(\w+)"'
    ),
    re.compile(r'\benv=\(?((?:\s*"\w+",?)+)\)?'),
    re.compile(r'os\.environ(?:\.get\(|\[)\s*"(\w+)"|getenv\(\s*"(\w+)"'),
    re.compile(r"env_var\(\s*'(\w+)'"),
]
READER_FOLDERS = ("pipeline", "gateway", "edge", "contracts", "dbt")


def variables_read_in_code() -> dict[str, set[str]]:
    """Every environment variable a reader names, with the files that read it."""
    found: dict[str, set[str]] = {}
    for folder in READER_FOLDERS:
        for path in sorted((REPO / folder).rglob("*")):
            skipped = {"target", "dbt_packages", "logs"} & set(path.parts)
            if path.suffix not in (".py", ".sql", ".yml") or skipped:
                continue
            text = path.read_text()
            for pattern in READS:
                for match in pattern.finditer(text):
                    for name in re.findall(
                        r"[A-Z][A-Z0-9_]+", " ".join(filter(None, match.groups()))
                    ):
                        found.setdefault(name, set()).add(str(path.relative_to(REPO)))
    return found


def settings_table() -> dict[str, list[str]]:
    """The README's Settings table: each variable of a row's first cell -> the row's cells."""
    section = (REPO / "README.md").read_text().split("\n## Settings\n")[1].split("\n## ")[0]
    rows: dict[str, list[str]] = {}
    for line in section.splitlines():
        cells = [cell.strip() for cell in line.strip().strip("|").split("|")]
        if not line.startswith("| `") or len(cells) != 4:
            continue
        for name in re.findall(r"`([A-Z][A-Z0-9_]+)`", cells[0]):
            assert name not in rows, f"{name} has two rows"
            rows[name] = cells
    return rows


def test_the_readme_table_lists_every_variable_read_and_no_other() -> None:
    read, table = variables_read_in_code(), settings_table()
    assert len(read) > 60  # the patterns still find the readers
    assert sorted(set(read) - set(table)) == [], "read in code but not in the README's table"
    assert sorted(set(table) - set(read)) == [], "in the README's table but read nowhere"
    for name, files in read.items():
        readers = table[name][3]
        assert all(f"`{file}`" in readers for file in files), (name, files, readers)


def test_the_table_names_the_luigi_cfg_key_of_every_pipeline_setting() -> None:
    table = settings_table()
    sections = [
        c for c in vars(config).values() if isinstance(c, type) and issubclass(c, luigi.Config)
    ]
    for section in sections:
        for name, parameter in section.get_params():
            for variable in parameter.env:
                assert f"`[{section.__name__}] {name}`" in table[variable][1], variable


def test_the_edge_env_example_sets_only_what_the_edge_reads() -> None:
    example = (REPO / "deploy" / "edge" / "edge.env.example").read_text()
    names = re.findall(r"^([A-Z][A-Z0-9_]+)=", example, re.MULTILINE)
    table = settings_table()
    assert names and all("edge" in table[name][3] for name in names), names


def test_dbt_defaults_equal_the_pipeline_ones() -> None:
    """profiles.yml's defaults serve a hand-run dbt only; they must not disagree."""
    profile = (REPO / "dbt" / "profiles.yml").read_text()
    defaults = dict(re.findall(r"env_var\('(\w+)', '([^']*)'\)", profile))
    assert defaults == {
        "DUCKDB_PATH": DUCKDB_PATH_DEFAULT,
        "DUCKDB_MEMORY_LIMIT": config.storage.duckdb_memory_limit._default,
    }
    assert config.storage.duckdb_path._default == DUCKDB_PATH_DEFAULT
    project = yaml.safe_load((REPO / "dbt" / "dbt_project.yml").read_text())
    assert project["vars"]["tz"] == TZ_DEFAULT == config.calendar.tz._default


# --- a bad value: one line from each process ---------------------------------------------------


def run_process(args: list[str], env: dict[str, str], cwd: Path = REPO):
    return subprocess.run(
        args, env={**os.environ, **env}, cwd=cwd, capture_output=True, text=True, timeout=120
    )


@pytest.mark.parametrize(
    ("process", "env", "code", "line"),
    [
        (
            "gateway",
            {"GATEWAY_API_PORT": "http"},
            2,
            "gateway: bad configuration: GATEWAY_API_PORT must be an integer, got 'http'",
        ),
        (
            "gateway",
            {"INFLUX_VERIFY_SSL": "maybe"},
            2,
            "gateway: bad configuration: INFLUX_VERIFY_SSL must be true or false, got 'maybe'",
        ),
        (
            "edge",
            {"EDGE_SERIAL_PORT": "/dev/null", "EDGE_POLL_SECONDS": "soon"},
            1,
            "edge: EDGE_POLL_SECONDS must be a number, got 'soon'",
        ),
        (
            "edge",
            {"EDGE_SERIAL_PORT": "/dev/null", "EDGE_LOG_LEVEL": "loud"},
            1,
            "edge: EDGE_LOG_LEVEL must be DEBUG, INFO, WARNING or ERROR, got 'LOUD'",
        ),
    ],
)
def test_a_bad_value_stops_a_service_in_one_line(
    process: str, env: dict[str, str], code: int, line: str
) -> None:
    result = run_process([sys.executable, "-m", process], env)
    assert result.returncode == code
    assert result.stderr.strip() == line


@pytest.mark.parametrize("layer", ["environment", "luigi.cfg", "flag"])
def test_a_bad_value_stops_the_pipeline_in_one_line_before_any_task(
    pipeline_env, tmp_path, layer
) -> None:
    flags: list[str] = []
    extra_env: dict[str, str] = {}
    if layer == "environment":
        extra_env["INFLUX_WINDOW_ROWS"] = "many"
        expected = "INFLUX_WINDOW_ROWS must be an integer, got 'many'"
    elif layer == "luigi.cfg":
        cfg = tmp_path / "override.cfg"
        cfg.write_text("[influx]\nwindow_rows = many\n")
        extra_env["LUIGI_CONFIG_PATH"] = str(cfg)
        expected = "luigi.cfg [influx] window_rows must be an integer, got 'many'"
    else:
        flags = ["--influx-window-rows", "many"]
        expected = "--influx-window-rows must be an integer, got 'many'"
    result = pipeline_env.cli(
        "ExtractDay", "--date", str(DAY), "--local-scheduler", *flags, extra_env=extra_env
    )
    assert result.returncode == 2
    assert f"pipeline: bad configuration: {expected}" in result.stderr
    assert "Traceback" not in result.stderr and "Informed scheduler" not in result.stderr
    assert not pipeline_env.parquet.exists()  # nothing ran


# --- a setting from each layer reaches every consumer ------------------------------------------


@pytest.mark.parametrize("layer", ["luigi.cfg", "environment", "flag"])
def test_the_time_zone_reaches_extraction_transform_and_dbt_from_every_layer(
    pipeline_env, tmp_path, layer
) -> None:
    # A UTC day of readings: in Asia/Tokyo they would span two local days.
    pipeline_env.write(minute_lines(24 * 60, DAY, tz="UTC"))
    flags: list[str] = []
    extra_env: dict[str, str] = {}
    if layer == "luigi.cfg":
        cfg = tmp_path / "override.cfg"
        cfg.write_text("[calendar]\ntz = UTC\n")
        extra_env |= {"LUIGI_CONFIG_PATH": str(cfg), "TZ": ""}  # empty: unset
    elif layer == "environment":
        extra_env["TZ"] = "UTC"
    else:
        flags = ["--calendar-tz", "UTC"]  # over the environment's Asia/Tokyo

    result = pipeline_env.cli(
        "DbtBuild", "--date", str(DAY), "--local-scheduler", *flags, extra_env=extra_env
    )
    assert result.returncode == 0, result.stderr
    with duckdb.connect(str(pipeline_env.duckdb), read_only=True) as con:
        # extraction: the whole UTC day; transform: ts_jst is the UTC wall clock
        raw = con.execute(
            "select count(*), count(*) filter (where ts_jst = timezone('UTC', ts_utc)) "
            "from raw_meter_readings"
        ).fetchone()
        # dbt: every reading on the one local day
        dates = con.execute("select distinct date_jst from stg_meter_readings").fetchall()
        daily = con.execute("select date_jst, reading_count from fct_daily_energy").fetchall()
    assert raw == (24 * 60, 24 * 60)
    assert dates == [(DAY,)]
    assert daily == [(DAY, 24 * 60)]


def test_a_section_is_read_once_until_what_it_reads_changes(monkeypatch) -> None:
    from luigi.cmdline_parser import CmdlineParser
    from luigi.task_register import Register

    import pipeline.tasks  # noqa: F401  (registers DuckLoadDay for the command line)

    monkeypatch.delenv("LATE_DATA_LOOKBACK_DAYS", raising=False)
    cfg = luigi.configuration.get_config()
    monkeypatch.setattr(cfg, "get", _answering(cfg.get, "late_data", "lookback_days", "3"))
    Register.clear_instance_cache()
    assert config.late_data().lookback_days == 3
    monkeypatch.setattr(cfg, "get", _answering(cfg.get, "late_data", "lookback_days", "5"))
    assert config.late_data().lookback_days == 3  # kept: luigi.cfg is not read again

    monkeypatch.setenv("LATE_DATA_LOOKBACK_DAYS", "4")  # one of its variables changed
    assert config.late_data().lookback_days == 4
    monkeypatch.delenv("LATE_DATA_LOOKBACK_DAYS")
    assert config.late_data().lookback_days == 5
    command = ["DuckLoadDay", "--late-data-lookback-days", "9"]
    with CmdlineParser.global_instance(command):  # another command line
        assert config.late_data().lookback_days == 9
    assert config.late_data(lookback_days=2).lookback_days == 2  # arguments: Luigi's own way
    monkeypatch.undo()
    Register.clear_instance_cache()  # Luigi's cache cleared: read again
    assert config.late_data().lookback_days == 7


def _answering(
    get: Callable[..., Any], section: str, option: str, value: str
) -> Callable[..., Any]:
    """luigi.cfg's `get`, with one option answering `value`."""

    def answer(s: str, o: str, *args: Any, **kwargs: Any) -> Any:
        return value if (s, o) == (section, option) else get(s, o, *args, **kwargs)

    return answer
