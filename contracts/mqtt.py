"""The messaging side of the contract (design.md section 7): broker settings and one client factory.

`MQTT_BROKER_URL` is `mqtt://host[:1883]` or `mqtts://user:pass@host[:8883]` (user and
password percent-encoded); `MQTT_TLS_CA_CERT` is the CA that signed the broker's certificate
(the system's CAs when unset). The edge and the gateway both open their client with
`make_client`, so TLS, hostname verification and credentials are set up one way only.
"""

from __future__ import annotations

import ssl
from dataclasses import dataclass
from urllib.parse import unquote, urlsplit

import paho.mqtt.client as mqtt
from paho.mqtt.enums import CallbackAPIVersion, MQTTProtocolVersion
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties

from contracts.message import DEFAULT_TOPIC
from contracts.settings import Environment

DEFAULT_BROKER_URL = "mqtt://127.0.0.1:1883"
DEFAULT_PORTS = {"mqtt": 1883, "mqtts": 8883}
PROTOCOLS = {"3.1.1": MQTTProtocolVersion.MQTTv311, "5": MQTTProtocolVersion.MQTTv5}
# MQTT 5 ends a session this many seconds after the client goes away; the broker keeps
# our unacknowledged QoS 1 messages that long (one week covers a long outage).
SESSION_EXPIRY_S = 7 * 24 * 3600
RECONNECT_MIN_S = 1
RECONNECT_MAX_S = 30


@dataclass(frozen=True)
class MqttSettings:
    host: str
    port: int
    tls: bool = False
    username: str | None = None
    password: str | None = None
    ca_cert: str | None = None
    topic: str = DEFAULT_TOPIC
    client_id: str = ""
    protocol: str = "3.1.1"

    @classmethod
    def from_url(cls, url: str, **fields: object) -> MqttSettings:
        """Settings from a broker URL; `fields` sets the rest (ca_cert, topic, client_id...)."""
        parts = urlsplit(url)
        # Errors show the URL without its userinfo: a password never reaches a log line.
        shown = f"{parts.scheme}://{parts.hostname or ''}{parts.path}"
        if parts.scheme not in DEFAULT_PORTS:
            raise ValueError(f"MQTT_BROKER_URL must start with mqtt:// or mqtts://, got {shown!r}")
        if not parts.hostname or parts.path not in ("", "/") or parts.query:
            raise ValueError(
                f"MQTT_BROKER_URL must be scheme://[user:pass@]host[:port], got {shown!r}"
            )
        try:
            port = parts.port or DEFAULT_PORTS[parts.scheme]
        except ValueError:
            raise ValueError(f"MQTT_BROKER_URL has a bad port: {shown!r}") from None
        return cls(
            host=parts.hostname,
            port=port,
            tls=parts.scheme == "mqtts",
            username=unquote(parts.username) if parts.username else None,
            password=unquote(parts.password) if parts.password is not None else None,
            **fields,  # type: ignore[arg-type]
        )

    @classmethod
    def from_env(
        cls, env: Environment, default_client_id: str, default_protocol: str = "3.1.1"
    ) -> MqttSettings:
        """MQTT_BROKER_URL, MQTT_TLS_CA_CERT, MQTT_TOPIC, MQTT_CLIENT_ID, MQTT_PROTOCOL.

        The edge passes `default_protocol="5"`: only MQTT 5 carries a reason code in the
        PUBACK, so only then can a publish the broker refused be told from a delivered one.
        """
        return cls.from_url(
            env.text("MQTT_BROKER_URL", DEFAULT_BROKER_URL),
            ca_cert=env.optional("MQTT_TLS_CA_CERT"),
            topic=env.text("MQTT_TOPIC", DEFAULT_TOPIC),
            client_id=env.text("MQTT_CLIENT_ID", default_client_id),
            protocol=env.choice("MQTT_PROTOCOL", default_protocol, list(PROTOCOLS)),
        )

    def __repr__(self) -> str:
        scheme = "mqtts" if self.tls else "mqtt"
        user = f"{self.username}:***@" if self.username else ""
        return (
            f"MqttSettings({scheme}://{user}{self.host}:{self.port}, topic={self.topic!r}, "
            f"client_id={self.client_id!r}, protocol={self.protocol})"
        )


def make_client(
    settings: MqttSettings,
    *,
    persistent_session: bool = False,
    manual_ack: bool = False,
    keepalive: int = 30,
    max_inflight_messages: int | None = None,
) -> mqtt.Client:
    """A paho-mqtt 2 client, set up to connect: call `loop_start()` or `loop_forever()` next.

    `persistent_session` keeps the broker session (subscriptions and unacknowledged QoS 1
    messages) across disconnects: clean_session False in 3.1.1, clean_start False with a
    session expiry in 5. Reconnects back off from RECONNECT_MIN_S to RECONNECT_MAX_S.
    `max_inflight_messages` bounds our unacknowledged QoS 1 publishes (paho's default is
    20); it must be set here, paho refuses to change it once connect_async was called.
    """
    protocol = PROTOCOLS[settings.protocol]
    v5 = protocol == MQTTProtocolVersion.MQTTv5
    client = mqtt.Client(
        CallbackAPIVersion.VERSION2,
        client_id=settings.client_id,
        clean_session=None if v5 else not persistent_session,
        protocol=protocol,
        manual_ack=manual_ack,
    )
    if settings.tls:
        # CERT_REQUIRED with check_hostname: the broker must prove it is `settings.host`.
        client.tls_set(ca_certs=settings.ca_cert, cert_reqs=ssl.CERT_REQUIRED)
    if settings.username is not None:
        client.username_pw_set(settings.username, settings.password)
    client.reconnect_delay_set(RECONNECT_MIN_S, RECONNECT_MAX_S)
    if max_inflight_messages is not None:
        client.max_inflight_messages_set(max_inflight_messages)
    properties = None
    clean_start: bool | int = mqtt.MQTT_CLEAN_START_FIRST_ONLY
    if v5:
        clean_start = not persistent_session
        if persistent_session:
            properties = Properties(PacketTypes.CONNECT)
            properties.SessionExpiryInterval = SESSION_EXPIRY_S
    client.connect_async(
        settings.host, settings.port, keepalive, clean_start=clean_start, properties=properties
    )
    return client
