"""The deployment files: certificate and password scripts, compose, .env.sample, Dockerfile,
systemd and cron. No Docker engine runs here, so compose is checked by reading it: every
command it (or systemd, or cron) runs must be something this repository provides."""

from __future__ import annotations

import importlib.util
import os
import re
import shlex
import subprocess
import sys
from datetime import datetime
from pathlib import Path

import pytest
import yaml
from conftest import REPO
from luigi.cmdline_parser import CmdlineParser

COMPOSE = yaml.safe_load((REPO / "docker-compose.yml").read_text())
SERVICES = COMPOSE["services"]
PYTHON_SERVICES = ("gateway", "luigid", "batch")
BATCH_PREFIX = ["/usr/bin/docker", "compose", "run", "--rm", "batch"]
NIGHTLY = "luigi --module pipeline RangeDaily --of NightlyDay --days-back 7"
# design.md section 7: every name must be in .env.sample, set or shown commented.
CONTRACT_VARIABLES = [
    "INFLUX_URL",
    "INFLUX_BUCKET",
    "INFLUX_TOKEN",
    "INFLUX_USERNAME",
    "INFLUX_PASSWORD",
    "INFLUX_MEASUREMENT",
    "DUCKDB_PATH",
    "PARQUET_BASE_DIR",
    "PARQUET_COMPRESSION",
    "PARQUET_ROW_GROUP_SIZE",
    "TZ",
    "SOURCE_DEFAULT",
    "MQTT_BROKER_URL",
    "MQTT_TLS_CA_CERT",
    "MQTT_TOPIC",
    "MQTT_CLIENT_ID",
    "GATEWAY_API_HOST",
    "GATEWAY_API_PORT",
    "GATEWAY_API_TOKEN",
    "GATEWAY_DEADLETTER_PATH",
    "EDGE_SERIAL_PORT",
    "EDGE_MODULE",
    "BROUTE_ID",
    "BROUTE_PASSWORD",
    "BROUTE_ID_FILE",
    "BROUTE_PASSWORD_FILE",
    "EDGE_POLL_SECONDS",
    "EDGE_OUTBOX_PATH",
]


def run_script(name: str, *args: str, env: dict[str, str] | None = None):
    return subprocess.run(
        [str(REPO / "scripts" / name), *args],
        env={**os.environ, **(env or {})},
        stdin=subprocess.DEVNULL,
        capture_output=True,
        text=True,
        timeout=60,
    )


def openssl(*args: str) -> str:
    return subprocess.run(
        ["openssl", *args], check=True, capture_output=True, text=True, timeout=30
    ).stdout


# --- scripts/make-certs ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("sans", "shown"),
    [
        (["DNS:mqtt.example.com", "DNS:mqtt"], "DNS:mqtt.example.com, DNS:mqtt"),
        (["IP:192.168.1.10"], "IP Address:192.168.1.10"),
    ],
)
def test_make_certs_chain_verifies_with_the_san_asked_for(
    tmp_path: Path, sans: list[str], shown: str
) -> None:
    result = run_script("make-certs", str(tmp_path), *sans)
    assert result.returncode == 0, result.stderr
    assert "OK" in openssl(
        "verify", "-CAfile", str(tmp_path / "ca.crt"), str(tmp_path / "server.crt")
    )
    san = openssl("x509", "-in", str(tmp_path / "server.crt"), "-noout", "-ext", "subjectAltName")
    assert san.splitlines()[1].strip() == shown
    assert (tmp_path / "server.key").stat().st_mode & 0o077 == 0
    assert (tmp_path / "ca.key").stat().st_mode & 0o077 == 0


def test_make_certs_reuses_the_ca_for_a_new_name(tmp_path: Path) -> None:
    assert run_script("make-certs", str(tmp_path), "DNS:old.example").returncode == 0
    ca = (tmp_path / "ca.crt").read_bytes()
    assert run_script("make-certs", str(tmp_path), "DNS:new.example").returncode == 0
    # The Raspberry Pi's copy of ca.crt stays valid for the re-issued server certificate.
    assert (tmp_path / "ca.crt").read_bytes() == ca
    assert "DNS:new.example" in openssl(
        "x509", "-in", str(tmp_path / "server.crt"), "-noout", "-ext", "subjectAltName"
    )


def test_make_certs_failure_keeps_the_working_pair(tmp_path: Path) -> None:
    assert run_script("make-certs", str(tmp_path), "DNS:mqtt.example.com").returncode == 0
    pair = {name: (tmp_path / name).read_bytes() for name in ("server.key", "server.crt")}
    (tmp_path / "ca.key").write_text("not a key\n")
    result = run_script("make-certs", str(tmp_path), "DNS:other.example.com")
    assert result.returncode != 0
    assert "make-certs: failed: openssl x509" in result.stderr
    assert {name: (tmp_path / name).read_bytes() for name in pair} == pair
    assert sorted(p.name for p in tmp_path.iterdir()) == [
        "ca.crt",
        "ca.key",
        "ca.srl",
        "server.crt",
        "server.key",
    ]


@pytest.mark.parametrize("args", [[], ["mqtt.example.com"], ["URI:https://x"], ["DNS:"]])
def test_make_certs_refuses_a_san_without_its_type(tmp_path: Path, args: list[str]) -> None:
    result = run_script("make-certs", str(tmp_path / "out"), *args)
    assert result.returncode == 2
    assert "usage:" in result.stderr
    assert not (tmp_path / "out").exists()


# --- scripts/make-mqtt-passwords ------------------------------------------------------------------


def test_make_mqtt_passwords_hashes_every_user_and_prints_no_secret(tmp_path: Path) -> None:
    secrets = {
        "MQTT_EDGE_PASSWORD": "edge-secret-1",
        "MQTT_GATEWAY_PASSWORD": "gw-secret-2",
        "MQTT_PIPELINE_PASSWORD": "pipeline-secret-3",
        "MQTT_HOMEASSISTANT_PASSWORD": "ha-secret-4",
    }
    result = run_script("make-mqtt-passwords", str(tmp_path / "passwords"), env=secrets)
    assert result.returncode == 0, result.stderr
    text = (tmp_path / "passwords").read_text()
    users = [line.split(":", 1)[0] for line in text.splitlines()]
    assert users == ["edge", "gateway", "pipeline", "homeassistant"]
    assert all(line.split(":", 1)[1].startswith("$7$") for line in text.splitlines())
    for secret in secrets.values():
        assert secret not in text + result.stdout + result.stderr
    assert (tmp_path / "passwords").stat().st_mode & 0o077 == 0
    assert sorted(p.name for p in tmp_path.iterdir()) == ["passwords"]


def test_make_mqtt_passwords_without_a_password_or_terminal_keeps_the_old_file(
    tmp_path: Path,
) -> None:
    password_file = tmp_path / "passwords"
    password_file.write_text("previous\n")
    result = run_script(
        "make-mqtt-passwords",
        str(password_file),
        env={"MQTT_EDGE_PASSWORD": "edge-secret", "MQTT_GATEWAY_PASSWORD": ""},
    )
    assert result.returncode != 0
    assert "MQTT_GATEWAY_PASSWORD" in result.stderr
    assert password_file.read_text() == "previous\n"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["passwords"]


def test_make_mqtt_passwords_makes_one_for_every_user_of_the_acl(tmp_path: Path) -> None:
    acl = tmp_path / "aclfile"
    acl.write_text("user edge\ntopic write a/1\n\nuser edge2\ntopic write a/2\nuser gateway\n")
    secrets = {f"MQTT_{u}_PASSWORD": f"pw-{u}" for u in ("EDGE", "EDGE2", "GATEWAY")}
    result = run_script("make-mqtt-passwords", str(tmp_path / "passwords"), str(acl), env=secrets)
    assert result.returncode == 0, result.stderr
    text = (tmp_path / "passwords").read_text()
    assert [line.split(":", 1)[0] for line in text.splitlines()] == ["edge", "edge2", "gateway"]

    acl.write_text("user edge-2\ntopic write a/2\n")
    result = run_script("make-mqtt-passwords", str(tmp_path / "other"), str(acl), env=secrets)
    assert result.returncode == 1
    assert "user 'edge-2'" in result.stderr and not (tmp_path / "other").exists()


# --- deploy/mosquitto -----------------------------------------------------------------------------


def test_broker_has_one_listener_and_it_is_tls() -> None:
    conf = (REPO / "deploy/mosquitto/mosquitto.conf").read_text()
    settings = dict(
        line.split(None, 1) for line in conf.splitlines() if line.strip() and line[0] != "#"
    )
    assert re.findall(r"^listener .*$", conf, re.M) == ["listener 8883"]
    assert settings["allow_anonymous"] == "false"
    assert settings["persistence"] == "true"
    assert settings["use_username_as_clientid"] == "true"  # no user can take another's session
    for key in ("cafile", "certfile", "keyfile", "password_file", "acl_file"):
        assert settings[key].startswith("/mosquitto/config/"), key


# --- docker-compose.yml ---------------------------------------------------------------------------


def check_runs_repository_code(argv: list[str]) -> None:
    """Fail unless argv starts something this repository provides, with arguments it accepts."""
    if argv[:2] == ["python", "-m"]:
        spec = importlib.util.find_spec(f"{argv[2]}.__main__") or importlib.util.find_spec(argv[2])
        assert spec and spec.origin and Path(spec.origin).is_relative_to(REPO), argv
    elif argv[0] == "luigi":
        # Luigi's own parser: imports --module, resolves the task and every parameter.
        with CmdlineParser.global_instance(argv[1:]) as parser:
            task = parser.get_task_obj()
        assert task.task_family == argv[argv.index("--module") + 2], argv
    else:
        pytest.fail(f"unknown command {argv}")


@pytest.mark.parametrize("service", PYTHON_SERVICES)
def test_python_services_run_repository_code(service: str) -> None:
    config = SERVICES[service]
    assert "entrypoint" not in config
    check_runs_repository_code(config["command"])


def test_services_are_the_seeds() -> None:
    assert set(SERVICES) == {
        "influxdb",
        "mqtt",
        "gateway",
        "luigid",
        "batch",
        "grafana",
        "cloudflared",
    }
    assert SERVICES["influxdb"]["image"].startswith("influxdb:1.8")
    assert SERVICES["mqtt"]["image"].startswith("eclipse-mosquitto:2")
    assert SERVICES["batch"]["profiles"] == ["batch"]


def test_every_image_is_pinned() -> None:
    for name, service in SERVICES.items():
        image = service["image"]
        if name in PYTHON_SERVICES:
            assert service["build"]["context"] == "."
            continue
        assert re.fullmatch(r"[\w./-]+:\d+(\.\d+)+", image), f"{name}: {image} is not pinned"


def test_only_the_tls_broker_port_is_published() -> None:
    published = {name: s["ports"] for name, s in SERVICES.items() if "ports" in s}
    assert published == {"mqtt": ["8883:8883"]}
    assert "expose" not in str(COMPOSE)


def test_containers_find_each_other_and_their_mounts() -> None:
    gateway = SERVICES["gateway"]["environment"]
    batch = SERVICES["batch"]["environment"]
    assert gateway["INFLUX_URL"] == batch["INFLUX_URL"] == "http://influxdb:8086"
    assert batch["DUCKDB_PATH"] == "/data/duckdb/home_energy.duckdb"
    assert batch["PARQUET_BASE_DIR"] == "/data/parquet"
    assert {"./data/duckdb:/data/duckdb", "./data/parquet:/data/parquet"} <= set(
        SERVICES["batch"]["volumes"]
    )
    assert gateway["MQTT_BROKER_URL"].startswith("mqtts://gateway:")
    assert gateway["MQTT_BROKER_URL"].endswith("@mqtt:8883")
    ca_mount = f"./deploy/mosquitto/certs/ca.crt:{gateway['MQTT_TLS_CA_CERT']}:ro"
    assert ca_mount in SERVICES["gateway"]["volumes"]
    assert gateway["GATEWAY_DEADLETTER_PATH"].startswith("/data/gateway/")
    assert (
        REPO / SERVICES["batch"]["environment"]["LUIGI_CONFIG_PATH"].removeprefix("/app/")
    ).exists()


def test_compose_luigi_config_overrides_the_repository_one() -> None:
    # Luigi reads luigi.cfg from the working folder (/app in the image), then LUIGI_CONFIG_PATH.
    script = (
        "import luigi.configuration as c, luigi.interface as i; "
        "core = i.core(); url = f'http://{core.scheduler_host}:{core.scheduler_port}'; "
        "print(url, c.get_config().get('task_history', 'db_connection'))"
    )
    env = {**os.environ, "LUIGI_CONFIG_PATH": "deploy/luigi/compose.cfg"}
    result = subprocess.run(
        [sys.executable, "-W", "ignore", "-c", script],
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
        check=True,
    )
    assert result.stdout.split() == [
        "http://luigid:8082",
        "sqlite:////var/lib/luigi/task-history.db",
    ]
    assert SERVICES["luigid"]["environment"]["LUIGI_CONFIG_PATH"] == "/app/deploy/luigi/compose.cfg"


def bind_mount_sources() -> list[str]:
    return [
        volume.split(":", 1)[0]
        for service in SERVICES.values()
        for volume in service.get("volumes", [])
        if volume.startswith("./")
    ]


def test_bind_mounts_exist_or_are_made_locally_and_ignored_by_git() -> None:
    for source in bind_mount_sources():
        if (REPO / source).exists() and not git_ignores(source):
            continue
        # Secrets and data: made by scripts/make-certs, make-mqtt-passwords or the services.
        assert source.startswith(("./deploy/mosquitto/certs/", "./data/")) or source == (
            "./deploy/mosquitto/passwords"
        ), source
        assert git_ignores(source), f"{source} would be committed"


def git_ignores(path: str) -> bool:
    result = subprocess.run(["git", "check-ignore", "-q", path], cwd=REPO, check=False)
    return result.returncode == 0


# --- .env.sample ----------------------------------------------------------------------------------

ENV_SAMPLE = (REPO / ".env.sample").read_text()
SET_IN_SAMPLE = dict(re.findall(r"^([A-Z][A-Z0-9_]*)=(.*)$", ENV_SAMPLE, re.M))
SHOWN_IN_SAMPLE = set(re.findall(r"^#?([A-Z][A-Z0-9_]*)=", ENV_SAMPLE, re.M))
COMPOSE_VARIABLES = set(
    re.findall(r"\$\{([A-Z][A-Z0-9_]*)[^}]*\}", (REPO / "docker-compose.yml").read_text())
)


def test_every_compose_variable_is_set_in_env_sample() -> None:
    assert COMPOSE_VARIABLES - set(SET_IN_SAMPLE) == set()


def test_env_sample_sets_nothing_compose_or_the_scripts_ignore() -> None:
    # Read by scripts/make-mqtt-passwords only.
    used_by_scripts = {"MQTT_EDGE_PASSWORD", "MQTT_HOMEASSISTANT_PASSWORD"}
    assert set(SET_IN_SAMPLE) - COMPOSE_VARIABLES - used_by_scripts == set()


def test_env_sample_shows_every_contract_variable() -> None:
    assert set(CONTRACT_VARIABLES) - SHOWN_IN_SAMPLE == set()


def test_env_sample_commits_no_secret() -> None:
    secrets = {k: v for k, v in SET_IN_SAMPLE.items() if re.search("PASSWORD|TOKEN", k)}
    assert secrets and all(value == "" for value in secrets.values()), secrets
    assert git_ignores(".env")


def test_every_variable_has_a_comment() -> None:
    # A comment may describe a group of variables written right below it.
    lines = ENV_SAMPLE.splitlines()
    for i, line in enumerate(lines):
        if re.match(r"^[A-Z][A-Z0-9_]*=", line):
            above = i - 1
            while re.match(r"^[A-Z][A-Z0-9_]*=", lines[above]):
                above -= 1
            assert lines[above].startswith("#"), f"{line} has no comment above it"


# --- Dockerfile -----------------------------------------------------------------------------------

DOCKERFILE = (REPO / "Dockerfile").read_text()


def test_dockerfile_pins_its_base_and_runs_as_a_user() -> None:
    (base,) = re.findall(r"^FROM (\S+)", DOCKERFILE, re.M)
    assert re.fullmatch(r"python:3\.11\.\d+-slim-bookworm", base)
    users = re.findall(r"^USER (\S+)", DOCKERFILE, re.M)
    assert users and users[-1] not in ("root", "0")


def test_dockerfile_copies_what_exists_and_installs_from_pyproject() -> None:
    sources = [
        part
        for line in re.findall(r"^COPY (.+)$", DOCKERFILE, re.M)
        for part in shlex.split(line)[:-1]
        if not part.startswith("--")
    ]
    assert "pyproject.toml" in sources
    for source in sources:
        assert (REPO / source).exists(), source
    assert re.search(r"pip install \.", DOCKERFILE)
    # The packages the services import are in the image.
    assert {"contracts", "pipeline", "gateway", "dbt", "luigi.cfg", "deploy/luigi"} <= set(sources)


def test_dockerignore_keeps_secrets_and_data_out_of_the_image() -> None:
    ignored = set((REPO / ".dockerignore").read_text().split())
    assert {".env", "data", ".git", "deploy/mosquitto"} <= ignored


# --- systemd and cron -----------------------------------------------------------------------------


def ini(path: str) -> dict[str, str]:
    lines = (REPO / path).read_text().splitlines()
    return dict(line.split("=", 1) for line in lines if "=" in line and line[0] not in "#;")


def nightly_argv(command: str) -> list[str]:
    argv = shlex.split(command)
    assert argv[: len(BATCH_PREFIX)] == BATCH_PREFIX, command
    return argv[len(BATCH_PREFIX) :]


def test_systemd_timer_runs_the_nightly_batch_like_the_seed() -> None:
    timer = ini("deploy/systemd/home-energy-batch.timer")
    assert timer["OnCalendar"] == "*-*-* 00:10:00"
    assert timer["Persistent"] == "true"
    service = ini("deploy/systemd/home-energy-batch.service")
    assert service["Type"] == "oneshot"
    argv = nightly_argv(service["ExecStart"])
    assert argv == NIGHTLY.split() == SERVICES["batch"]["command"]
    check_runs_repository_code(argv)


@pytest.mark.parametrize("local_time", ["00:10", "12:00"])
def test_nightly_batch_schedules_the_last_local_days_but_never_today(
    local_time: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # The nightly command as run at 00:10 JST (the timer) and by hand at noon, on 2025-12-17.
    # RangeDaily's `now` pins the clock; empty data folders make every day missing.
    monkeypatch.setenv("PARQUET_BASE_DIR", str(tmp_path / "parquet"))
    monkeypatch.setenv("DUCKDB_PATH", str(tmp_path / "duckdb" / "home_energy.duckdb"))
    now = datetime.fromisoformat(f"2025-12-17T{local_time}:00+09:00")
    argv = [*NIGHTLY.split()[1:], "--now", str(int(now.timestamp()))]
    with CmdlineParser.global_instance(argv) as parser:
        days = sorted(str(task.date) for task in parser.get_task_obj().requires())
    assert days[-1] == "2025-12-16"  # yesterday, never the day still running
    assert len(days) >= 6


def test_crontab_runs_the_same_batch_at_the_same_time() -> None:
    (entry,) = [
        line
        for line in (REPO / "deploy/cron/home-energy.crontab").read_text().splitlines()
        if line and not line.startswith("#")
    ]
    minute, hour, *_, command = entry.split(None, 5)
    assert (minute, hour) == ("10", "0")
    batch = command.split("&&", 1)[1].split("2>&1")[0]
    assert nightly_argv(batch) == NIGHTLY.split()
