"""Real servers (influxd, mosquitto, luigid) on loopback, with their data in one folder.

Tests start them on free ports in a temporary folder; `scripts/stack` starts them on the
default ports under `var/`. Each server is one small class: a config file it renders, the
command that runs it and how to tell it is ready.
"""

from __future__ import annotations

import base64
import contextlib
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.parse
import urllib.request
from pathlib import Path
from typing import Self

APT_PACKAGES = ("influxdb", "mosquitto", "mosquitto-clients")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def port_open(port: int, host: str = "127.0.0.1") -> bool:
    with socket.socket() as s:
        s.settimeout(0.2)
        return s.connect_ex((host, port)) == 0


def ensure_packages() -> None:
    """Install influxdb and mosquitto from Debian's packages when they are missing."""
    if shutil.which("influxd") and _mosquitto_binary():
        return
    if os.geteuid() != 0:
        raise RuntimeError(
            f"influxd/mosquitto missing: run `apt-get install -y {' '.join(APT_PACKAGES)}`"
        )
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    subprocess.run(["apt-get", "update", "-qq"], check=True, env=env)
    subprocess.run(["apt-get", "install", "-y", "-qq", *APT_PACKAGES], check=True, env=env)


def _mosquitto_binary() -> str | None:
    return shutil.which("mosquitto") or next(
        (p for p in ("/usr/sbin/mosquitto", "/usr/local/sbin/mosquitto") if os.path.exists(p)), None
    )


class LocalServer:
    """A server process bound to 127.0.0.1:port whose state lives in `workdir`."""

    name = "server"

    def __init__(self, workdir: Path, port: int | None = None) -> None:
        self.workdir = Path(workdir)
        self.port = port or free_port()
        self.process: subprocess.Popen | None = None

    # Template hooks for subclasses.
    def command(self) -> list[str]:
        raise NotImplementedError

    def config_text(self) -> str:
        return ""

    def is_ready(self) -> bool:
        return port_open(self.port)

    def env(self) -> dict[str, str]:
        return {}

    @property
    def config_path(self) -> Path:
        return self.workdir / f"{self.name}.conf"

    @property
    def pid_path(self) -> Path:
        return self.workdir / f"{self.name}.pid"

    @property
    def log_path(self) -> Path:
        return self.workdir / f"{self.name}.log"

    def start(self, timeout: float = 30.0) -> Self:
        self.workdir.mkdir(parents=True, exist_ok=True)
        self.config_path.write_text(self.config_text())
        if port_open(self.port):
            raise RuntimeError(f"{self.name}: port {self.port} is already in use")
        log = self.log_path.open("ab")
        self.process = subprocess.Popen(
            self.command(),
            stdout=log,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            start_new_session=True,
            env=self.process_env(),
        )
        log.close()
        self.pid_path.write_text(str(self.process.pid))
        self._wait_ready(timeout)
        return self

    def process_env(self) -> dict[str, str]:
        return dict(os.environ)

    def _wait_ready(self, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process and self.process.poll() is not None:
                raise RuntimeError(
                    f"{self.name} exited at start; see {self.log_path}:\n{self.tail()}"
                )
            if self.is_ready():
                return
            time.sleep(0.05)
        self.stop()
        raise RuntimeError(f"{self.name} not ready on port {self.port} after {timeout}s")

    def tail(self, lines: int = 20) -> str:
        if not self.log_path.exists():
            return ""
        return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])

    def pid(self) -> int | None:
        if self.process:
            return self.process.pid
        try:
            return int(self.pid_path.read_text())
        except (OSError, ValueError):
            return None

    def running(self) -> bool:
        pid = self.pid()
        if pid is None:
            return False
        if self.process:
            return self.process.poll() is None
        try:
            os.kill(pid, 0)
        except OSError:
            return False
        return True

    def stop(self, sig: int = signal.SIGTERM, timeout: float = 15.0) -> None:
        pid = self.pid()
        if pid is not None and self.running():
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, sig)
            deadline = time.monotonic() + timeout
            while self.running() and time.monotonic() < deadline:
                time.sleep(0.05)
            if self.running():
                os.kill(pid, signal.SIGKILL)
                while self.running():
                    time.sleep(0.05)
        if self.process:
            self.process.wait()
        self.process = None
        self.pid_path.unlink(missing_ok=True)

    def kill(self) -> None:
        self.stop(signal.SIGKILL)

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()


class InfluxServer(LocalServer):
    """InfluxDB 1.x (`influxd`) with HTTP on `port`; `auth` turns on users and passwords."""

    name = "influxd"

    def __init__(
        self,
        workdir: Path,
        port: int | None = None,
        auth: tuple[str, str] | None = None,
    ) -> None:
        super().__init__(workdir, port)
        self.rpc_port = free_port()
        self.auth = auth

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def command(self) -> list[str]:
        return [shutil.which("influxd") or "influxd", "-config", str(self.config_path)]

    def config_text(self) -> str:
        d = self.workdir
        return f"""reporting-disabled = true
bind-address = "127.0.0.1:{self.rpc_port}"
[meta]
  dir = "{d}/meta"
[data]
  dir = "{d}/data"
  wal-dir = "{d}/wal"
  query-log-enabled = false
  wal-fsync-delay = "0s"
[monitor]
  store-enabled = false
[http]
  enabled = true
  bind-address = "127.0.0.1:{self.port}"
  auth-enabled = {"true" if self.auth else "false"}
  log-enabled = false
  max-body-size = 0
[logging]
  level = "warn"
[continuous_queries]
  enabled = false
"""

    def is_ready(self) -> bool:
        try:
            with urllib.request.urlopen(f"{self.url}/ping", timeout=1) as resp:
                return resp.status == 204
        except OSError:
            return False

    def start(self, timeout: float = 30.0) -> InfluxServer:
        super().start(timeout)
        if self.auth:
            user, password = self.auth
            # The first admin user may be created without credentials.
            self.query(f"CREATE USER \"{user}\" WITH PASSWORD '{password}' WITH ALL PRIVILEGES")
        return self

    def query(self, q: str, db: str | None = None) -> bytes:
        data = urllib.parse.urlencode({"q": q, **({"db": db} if db else {})}).encode()
        req = urllib.request.Request(f"{self.url}/query", data=data)
        if self.auth and "CREATE USER" not in q:
            req.add_header("Authorization", _basic_auth(*self.auth))
        with urllib.request.urlopen(req, timeout=10) as resp:
            return resp.read()

    def env(self) -> dict[str, str]:
        env = {"INFLUX_URL": self.url}
        if self.auth:
            env |= {"INFLUX_USERNAME": self.auth[0], "INFLUX_PASSWORD": self.auth[1]}
        return env


def _basic_auth(user: str, password: str) -> str:
    return "Basic " + base64.b64encode(f"{user}:{password}".encode()).decode()


class MosquittoServer(LocalServer):
    """Mosquitto 2 with a plain listener on `port`; `extra_config` adds TLS, passwords, ACLs."""

    name = "mosquitto"

    def __init__(self, workdir: Path, port: int | None = None, extra_config: str = "") -> None:
        super().__init__(workdir, port)
        self.extra_config = extra_config

    @property
    def url(self) -> str:
        return f"mqtt://127.0.0.1:{self.port}"

    def command(self) -> list[str]:
        return [_mosquitto_binary() or "mosquitto", "-c", str(self.config_path)]

    def config_text(self) -> str:
        lines = [
            # As root, mosquitto drops to its own user, which cannot write the test's folders.
            *(["user root"] if os.geteuid() == 0 else []),
            "per_listener_settings false",
            "persistence true",
            f"persistence_location {self.workdir}/",
            "autosave_interval 1",
            "log_dest stdout",
            "max_queued_messages 0",
            "max_inflight_messages 0",
        ]
        if not self.extra_config:
            lines += [f"listener {self.port} 127.0.0.1", "allow_anonymous true"]
        return "\n".join(lines) + "\n" + self.extra_config

    def env(self) -> dict[str, str]:
        return {"MQTT_BROKER_URL": self.url}


class LuigidServer(LocalServer):
    """Luigi's central scheduler with its state and a SQLite task history in `workdir`."""

    name = "luigid"

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def command(self) -> list[str]:
        return [
            sys.executable,
            "-m",
            "scheduler",  # luigid with the deployment's batched task history
            "--address",
            "127.0.0.1",
            "--port",
            str(self.port),
            "--state-path",
            str(self.workdir / "luigi-state.pickle"),
            "--logdir",
            str(self.workdir / "log"),
        ]

    def config_text(self) -> str:
        return f"""[scheduler]
record_task_history = true
state_path = {self.workdir}/luigi-state.pickle
retry_delay = 5

[resources]
duckdb = 1

[task_history]
db_connection = sqlite:///{self.workdir}/luigi-task-history.db
"""

    def process_env(self) -> dict[str, str]:
        (self.workdir / "log").mkdir(exist_ok=True)
        return {**os.environ, "LUIGI_CONFIG_PATH": str(self.config_path)}

    def is_ready(self) -> bool:
        try:
            with urllib.request.urlopen(f"{self.url}/api/task_list?data={{}}", timeout=1) as r:
                return r.status == 200
        except OSError:
            return False

    def env(self) -> dict[str, str]:
        return {"LUIGI_SCHEDULER_URL": self.url}


class GatewayServer(LocalServer):
    """`python -m gateway` with its API on `port`, configured by `env` (INFLUX_*, MQTT_*...).

    Ready when the API port answers; its dead letters default to `workdir`. A real process,
    so tests and the benchmark can SIGTERM and SIGKILL it.
    """

    name = "gateway"

    def __init__(self, workdir: Path, env: dict[str, str], port: int | None = None) -> None:
        super().__init__(workdir, port)
        self.settings_env = env

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def deadletter_path(self) -> Path:
        return Path(self.process_env()["GATEWAY_DEADLETTER_PATH"])

    def command(self) -> list[str]:
        return [sys.executable, "-m", "gateway"]

    def process_env(self) -> dict[str, str]:
        return {
            **os.environ,
            "GATEWAY_DEADLETTER_PATH": str(self.workdir / "deadletters.jsonl"),
            **self.settings_env,
            "GATEWAY_API_HOST": "127.0.0.1",
            "GATEWAY_API_PORT": str(self.port),
        }


class MotoS3Server(LocalServer):
    """An S3-compatible server (moto in server mode) that checks credentials.

    Moto accepts anything until `INITIAL_NO_AUTH_ACTION_COUNT` requests have been served; the
    first three create a user allowed everything and its access key, so from then on a wrong
    key or secret is refused as AWS would. `env()` gives S3_ENDPOINT_URL and that user's keys.
    """

    name = "moto"
    setup_actions = 3  # create_user, put_user_policy, create_access_key
    region = "us-east-1"

    def __init__(self, workdir: Path, port: int | None = None) -> None:
        super().__init__(workdir, port)
        self.access_key = ""
        self.secret_key = ""

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def command(self) -> list[str]:
        return [sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(self.port)]

    def process_env(self) -> dict[str, str]:
        return {**os.environ, "INITIAL_NO_AUTH_ACTION_COUNT": str(self.setup_actions)}

    def start(self, timeout: float = 30.0) -> MotoS3Server:
        super().start(timeout)
        iam = self._client("iam", "setup", "setup")
        iam.create_user(UserName="pipeline")
        allow_all = json.dumps(
            {
                "Version": "2012-10-17",
                "Statement": [{"Effect": "Allow", "Action": "*", "Resource": "*"}],
            }
        )
        iam.put_user_policy(UserName="pipeline", PolicyName="all", PolicyDocument=allow_all)
        key = iam.create_access_key(UserName="pipeline")["AccessKey"]
        self.access_key, self.secret_key = key["AccessKeyId"], key["SecretAccessKey"]
        return self

    def create_bucket(self, name: str) -> None:
        self.s3().create_bucket(Bucket=name)

    def s3(self):  # a boto3 client: boto3 comes with moto, a dev dependency
        return self._client("s3", self.access_key, self.secret_key)

    def _client(self, service: str, access_key: str, secret_key: str):
        import boto3

        return boto3.client(
            service,
            endpoint_url=self.url,
            region_name=self.region,
            aws_access_key_id=access_key,
            aws_secret_access_key=secret_key,
        )

    def env(self) -> dict[str, str]:
        return {
            "S3_ENDPOINT_URL": self.url,
            "AWS_ACCESS_KEY_ID": self.access_key,
            "AWS_SECRET_ACCESS_KEY": self.secret_key,
            "AWS_DEFAULT_REGION": self.region,
        }
