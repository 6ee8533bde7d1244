"""The production broker for tests: the repository's deploy/mosquitto configuration, run locally.

`SecureMosquittoServer` renders deploy/mosquitto/mosquitto.conf (TLS listener, no anonymous
access, password file, ACL, persistence) with its container paths pointed at a work folder and
its port 8883 replaced by a free loopback port. Certificates come from scripts/make-certs (SAN
IP:127.0.0.1 and DNS:localhost) and the password file from scripts/make-mqtt-passwords, with a
random password for each user of the ACL (`edge`, `gateway`, `pipeline`, `homeassistant`).
So a test talks to exactly what an operator deploys. The interface other tests rely on:

    server.port                  the TLS port on 127.0.0.1
    server.ca_path               the CA certificate clients verify the broker with
    server.credentials           {"edge": password, "gateway": password, ...} (every user)
    server.url_for(user)         "mqtts://user:password@127.0.0.1:port"
    server.env_for(user)         {"MQTT_BROKER_URL": url_for(user), "MQTT_TLS_CA_CERT": ca_path}
    server.discard_sessions()    forget what the broker keeps for each user (between tests)

Certificates and passwords are made once per work folder, so a stop/start keeps them.
The broker makes each user name the client id (use_username_as_clientid): one session a user.
"""

from __future__ import annotations

import os
import secrets
import subprocess
import threading
from pathlib import Path

from contracts.mqtt import MqttSettings, make_client
from devstack.servers import MosquittoServer

REPO_ROOT = Path(__file__).resolve().parent.parent
DEPLOY_DIR = REPO_ROOT / "deploy" / "mosquitto"
CONTAINER_CONFIG_DIR = "/mosquitto/config/"
CONTAINER_DATA_DIR = "/mosquitto/data/"
CONTAINER_LISTENER = "listener 8883"


class SecureMosquittoServer(MosquittoServer):
    """deploy/mosquitto's TLS-only broker with the users of its ACL, on 127.0.0.1:port."""

    name = "mosquitto-tls"

    def __init__(self, workdir: Path, port: int | None = None) -> None:
        super().__init__(workdir, port)
        self.config_dir = self.workdir / "config"
        self.data_dir = self.workdir / "data"
        self.credentials: dict[str, str] = {}

    @property
    def ca_path(self) -> Path:
        return self.config_dir / "certs" / "ca.crt"

    @property
    def url(self) -> str:
        return f"mqtts://127.0.0.1:{self.port}"

    def url_for(self, user: str) -> str:
        return f"mqtts://{user}:{self.credentials[user]}@127.0.0.1:{self.port}"

    def env_for(self, user: str) -> dict[str, str]:
        return {"MQTT_BROKER_URL": self.url_for(user), "MQTT_TLS_CA_CERT": str(self.ca_path)}

    def env(self) -> dict[str, str]:
        return {"MQTT_TLS_CA_CERT": str(self.ca_path)}

    def start(self, timeout: float = 30.0) -> SecureMosquittoServer:
        self._prepare_secrets()
        super().start(timeout)
        return self

    def discard_sessions(self, timeout: float = 10.0) -> None:
        """Connect once as each user with a clean session: the broker drops what it kept.

        A user's session is shared by all its connections, so tests sharing a broker would
        otherwise resume each other's subscriptions and queued messages.
        """
        for user in self.credentials:
            settings = MqttSettings.from_url(self.url_for(user), ca_cert=str(self.ca_path))
            if not _connect_cleanly(settings, timeout):
                raise RuntimeError(f"{self.name}: {user} could not connect")

    def config_text(self) -> str:
        return render_config(
            (DEPLOY_DIR / "mosquitto.conf").read_text(),
            config_dir=self.config_dir,
            data_dir=self.data_dir,
            port=self.port,
        )

    def _prepare_secrets(self) -> None:
        self.data_dir.mkdir(parents=True, exist_ok=True)
        self.config_dir.mkdir(parents=True, exist_ok=True)
        # The ACL is the repository's file, copied fresh so an edit shows up on the next start.
        (self.config_dir / "aclfile").write_text((DEPLOY_DIR / "aclfile").read_text())
        if not self.ca_path.exists():
            _run_script("make-certs", str(self.ca_path.parent), "IP:127.0.0.1", "DNS:localhost")
        if not self.credentials:
            self.credentials = {user: secrets.token_hex(16) for user in acl_users()}
            passwords = {
                f"MQTT_{user.upper()}_PASSWORD": pw for user, pw in self.credentials.items()
            }
            _run_script("make-mqtt-passwords", str(self.config_dir / "passwords"), env=passwords)


def acl_users() -> list[str]:
    """The users deploy/mosquitto/aclfile names (as scripts/make-mqtt-passwords reads them)."""
    lines = (DEPLOY_DIR / "aclfile").read_text().splitlines()
    return [line.split()[1] for line in lines if line.split()[:1] == ["user"]]


def render_config(text: str, config_dir: Path, data_dir: Path, port: int) -> str:
    """The container configuration with local paths and a loopback listener on `port`."""
    if text.count(f"\n{CONTAINER_LISTENER}\n") != 1:
        raise ValueError(f"expected exactly one '{CONTAINER_LISTENER}' line in mosquitto.conf")
    text = text.replace(f"\n{CONTAINER_LISTENER}\n", f"\nlistener {port} 127.0.0.1\n")
    text = text.replace(CONTAINER_CONFIG_DIR, f"{config_dir}/").replace(
        CONTAINER_DATA_DIR, f"{data_dir}/"
    )
    settings = [line for line in text.splitlines() if not line.lstrip().startswith("#")]
    if any(" /mosquitto/" in line for line in settings):
        raise ValueError("mosquitto.conf names a container path the renderer does not map")
    if os.geteuid() == 0:
        # As root, mosquitto switches to the `mosquitto` user before reading the password file,
        # and that user cannot enter pytest's owner-only temporary folders. In the container
        # the files belong to the image's mosquitto user (docs/operations.md); staying root is
        # the local equivalent.
        text += "\nuser root\n"
    return text


def _connect_cleanly(settings: MqttSettings, timeout: float) -> bool:
    """Connect with a clean session and disconnect; False if the broker did not accept us."""
    client = make_client(settings)
    connected = threading.Event()

    def on_connect(_c: object, _u: object, _f: object, reason_code, _p: object) -> None:
        if not reason_code.is_failure:
            connected.set()

    client.on_connect = on_connect
    client.loop_start()
    try:
        return connected.wait(timeout)
    finally:
        client.disconnect()
        client.loop_stop()


def _run_script(name: str, *args: str, env: dict[str, str] | None = None) -> None:
    result = subprocess.run(
        [str(REPO_ROOT / "scripts" / name), *args],
        env={**os.environ, **(env or {})},
        stdin=subprocess.DEVNULL,
        capture_output=True,
        text=True,
        check=False,
    )
    if result.returncode != 0:
        raise RuntimeError(f"scripts/{name} failed ({result.returncode}):\n{result.stderr}")
