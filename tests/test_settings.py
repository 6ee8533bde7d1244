"""A setting reaches every consumer from each layer (luigi.cfg, environment, flag), dbt included,
and Luigi's own scheduler flags are not overridden by the repository's luigi.cfg."""

from __future__ import annotations

import json
import urllib.parse
import urllib.request
from datetime import date

import pytest
from conftest import minute_lines

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
