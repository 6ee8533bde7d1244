"""Home Assistant: the discovery payloads against HA's rules, the pipeline's daily sensors and
the gateway's live power on the repository's broker (TLS, passwords, ACL).

HA's rules, as its documentation and sensor/MQTT schemas state them (docs/home-assistant.md):
- discovery topic `<prefix>/<component>/[<node_id>/]<object_id>/config`, ids `[a-zA-Z0-9_-]+`;
- an MQTT sensor needs `state_topic`; a `device` needs a `unique_id` on the entity and
  `identifiers` or `connections`; an `origin` needs a `name`;
- a unit must be one HA knows for the device class (DEVICE_CLASS_UNITS; `monetary` takes an
  ISO 4217 currency code), and the state class one the device class allows
  (DEVICE_CLASS_STATE_CLASSES: energy total/total_increasing, monetary total only, power
  measurement);
- `last_reset_value_template` only with state class `total`; `expire_after` a positive int;
- the Energy dashboard takes energy sensors with state class total or total_increasing in an
  energy unit, and cost sensors that are monetary with state class total.
"""

from __future__ import annotations

import json
import queue
import re
import ssl
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime, timedelta
from pathlib import Path
from zoneinfo import ZoneInfo

import duckdb
import httpx
import jinja2
import paho.mqtt.client as paho
import pytest
from conftest import wait_for
from luigi.task_register import Register
from paho.mqtt.enums import CallbackAPIVersion

from contracts import homeassistant as ha
from contracts.message import Reading, source_topic, to_payload
from contracts.mqtt import MqttSettings
from devstack.secure_broker import SecureMosquittoServer
from devstack.servers import GatewayServer, InfluxServer
from pipeline.days import DaySet
from pipeline.errors import PipelineError
from pipeline.ha_publish import Message, household_messages, publish
from pipeline.outputs import HomeAssistantPublishDay

JST = ZoneInfo("Asia/Tokyo")
WAIT_S = 10.0

# --- HA's rules, written down from its documentation -------------------------------------------

DISCOVERY_TOPIC = re.compile(
    r"(?P<prefix>[^/#+]+)/(?P<component>[a-z_]+)/(?:(?P<node_id>[a-zA-Z0-9_-]+)/)?"
    r"(?P<object_id>[a-zA-Z0-9_-]+)/config"
)
DEVICE_CLASS_UNITS = {
    "energy": {"J", "kJ", "MJ", "GJ", "mWh", "Wh", "kWh", "MWh", "GWh", "TWh", "cal", "kcal"},
    "power": {"mW", "W", "kW", "MW", "GW", "TW", "BTU/h"},
}
CURRENCIES = {"JPY", "EUR", "USD", "GBP", "CHF", "AUD", "CAD", "CNY", "KRW", "SEK"}
DEVICE_CLASS_STATE_CLASSES = {
    "energy": {"total", "total_increasing"},
    "monetary": {"total"},
    "power": {"measurement"},
}
STATE_CLASSES = {"measurement", "measurement_angle", "total", "total_increasing"}
SENSOR_KEYS = {
    "availability",
    "availability_mode",
    "availability_template",
    "availability_topic",
    "default_entity_id",
    "device",
    "device_class",
    "enabled_by_default",
    "encoding",
    "entity_category",
    "entity_picture",
    "expire_after",
    "force_update",
    "icon",
    "json_attributes_template",
    "json_attributes_topic",
    "last_reset_value_template",
    "name",
    "object_id",
    "options",
    "origin",
    "payload_available",
    "payload_not_available",
    "qos",
    "state_class",
    "state_topic",
    "suggested_display_precision",
    "unique_id",
    "unit_of_measurement",
    "value_template",
}
DEVICE_KEYS = {
    "configuration_url",
    "connections",
    "hw_version",
    "identifiers",
    "manufacturer",
    "model",
    "model_id",
    "name",
    "serial_number",
    "suggested_area",
    "sw_version",
    "via_device",
}
ENERGY_DASHBOARD_UNITS = {"Wh", "kWh", "MWh", "GJ", "MJ"}


def ha_problems(topic: str, config: dict) -> list[str]:
    """Why HA would refuse (or mishandle) this discovery message; empty when it takes it."""
    problems = []
    match = DISCOVERY_TOPIC.fullmatch(topic)
    if not match or match["component"] != "sensor":
        problems.append(f"{topic}: not a sensor discovery topic")
    if unknown := set(config) - SENSOR_KEYS:
        problems.append(f"unknown keys {sorted(unknown)}")
    for name in ("state_topic", "json_attributes_topic"):
        value = config.get(name)
        if (name == "state_topic" or value is not None) and not _publish_topic(value):
            problems.append(f"{name} must be a topic without wildcards")
    device = config.get("device")
    if device is not None:
        if not config.get("unique_id"):
            problems.append("a device needs the entity's unique_id")
        if set(device) - DEVICE_KEYS:
            problems.append(f"unknown device keys {sorted(set(device) - DEVICE_KEYS)}")
        if not (device.get("identifiers") or device.get("connections")):
            problems.append("a device needs identifiers or connections")
    if "origin" in config and not config["origin"].get("name"):
        problems.append("an origin needs a name")
    device_class, unit = config.get("device_class"), config.get("unit_of_measurement")
    state_class = config.get("state_class")
    if device_class == "monetary":
        if unit not in CURRENCIES:
            problems.append(f"monetary needs an ISO 4217 currency, got {unit!r}")
    elif device_class in DEVICE_CLASS_UNITS:
        if unit not in DEVICE_CLASS_UNITS[device_class]:
            problems.append(f"unit {unit!r} is not valid for device class {device_class}")
    elif device_class is not None:
        problems.append(f"device class {device_class!r} not covered by these rules")
    if state_class is not None:
        if state_class not in STATE_CLASSES:
            problems.append(f"unknown state class {state_class!r}")
        elif state_class not in DEVICE_CLASS_STATE_CLASSES.get(device_class, STATE_CLASSES):
            problems.append(f"state class {state_class} is impossible for {device_class}")
    if "last_reset_value_template" in config and state_class != "total":
        problems.append("last_reset_value_template needs state class total")
    expire = config.get("expire_after")
    if expire is not None and not (isinstance(expire, int) and expire > 0):
        problems.append("expire_after must be a positive integer")
    return problems


def _publish_topic(topic: object) -> bool:
    return isinstance(topic, str) and bool(topic) and not set("+#") & set(topic)


def energy_dashboard_role(config: dict) -> str | None:
    """What the Energy dashboard can use the sensor for, if anything."""
    state_class = config.get("state_class")
    if (
        config.get("device_class") == "energy"
        and state_class in ("total", "total_increasing")
        and config.get("unit_of_measurement") in ENERGY_DASHBOARD_UNITS
    ):
        return "consumption"
    if config.get("device_class") == "monetary" and state_class == "total":
        return "cost"
    return None


def rendered(config: dict, payload: bytes) -> tuple[float, datetime | None]:
    """The state and last_reset HA gets from a state payload through the config's templates."""
    env = jinja2.Environment(undefined=jinja2.StrictUndefined)
    value_json = json.loads(payload)
    state = float(env.from_string(config["value_template"]).render(value_json=value_json))
    last_reset = None
    if template := config.get("last_reset_value_template"):
        last_reset = datetime.fromisoformat(env.from_string(template).render(value_json=value_json))
        assert last_reset.utcoffset() is not None, "HA needs an aware last_reset"
    return state, last_reset


# --- The payloads -------------------------------------------------------------------------------


@pytest.mark.parametrize("source", ["meter1", "meter.2", "a-b_C9"])
@pytest.mark.parametrize("key", sorted(ha.SENSORS))
def test_every_discovery_payload_passes_the_rules(source: str, key: str) -> None:
    config = ha.discovery_config(source, key)
    assert ha_problems(ha.config_topic(source, key), config) == []
    assert json.loads(ha.encode(config)) == config
    assert config["state_topic"] == f"home/energy/{source}/{key}"


def test_energy_and_cost_reach_the_energy_dashboard() -> None:
    roles = {key: energy_dashboard_role(ha.discovery_config("m", key)) for key in ha.SENSORS}
    assert roles == {
        "daily_energy": "consumption",
        "daily_cost": "cost",
        "period_projection": None,
        "power": None,
    }


def test_the_rules_refuse_what_ha_refuses() -> None:
    good = ha.discovery_config("meter1", "daily_energy")
    topic = ha.config_topic("meter1", "daily_energy")
    cases = {
        "monetary total_increasing": good
        | {
            "device_class": "monetary",
            "unit_of_measurement": "JPY",
            "state_class": "total_increasing",
        },
        "energy in watts": good | {"unit_of_measurement": "W"},
        "power as a total": ha.discovery_config("m", "power") | {"state_class": "total"},
        "no state topic": {k: v for k, v in good.items() if k != "state_topic"},
        "last_reset on a meter": good | {"state_class": "total_increasing"},
        "device without ids": good | {"device": {"name": "x"}},
        "a typo": good | {"unit_of_measurment": "kWh"},
        "currency name": ha.discovery_config("m", "daily_cost") | {"unit_of_measurement": "yen"},
    }
    for case, config in cases.items():
        assert ha_problems(topic, config), case
    assert ha_problems("homeassistant/sensor/home_energy/meter.2_power/config", good)


def test_sources_map_to_distinct_valid_object_ids() -> None:
    ids = {ha.object_id(s, "power") for s in ("meter.2", "meter_2", "meter-2", "meter2")}
    assert len(ids) == 4
    assert all(re.fullmatch(r"[a-zA-Z0-9_-]+", i) for i in ids)


def test_daily_states_count_each_day_once() -> None:
    config = ha.discovery_config("meter1", "daily_energy")
    day = datetime(2025, 12, 17, tzinfo=JST)
    state, last_reset = rendered(config, ha.daily_state(12.5, day.date(), day))
    assert (state, last_reset) == (12.5, day)
    # A new day is a new cycle (a new last_reset), counted in full even when lower.
    _, next_reset = rendered(config, ha.daily_state(9.0, day.date(), day + timedelta(days=1)))
    assert next_reset > last_reset


# --- The pipeline's daily sensors on the repository's broker ------------------------------------


class Subscriber:
    """A TLS client of `user` that records every message it is delivered."""

    def __init__(self, broker: SecureMosquittoServer, user: str, *filters: str) -> None:
        self.messages: queue.Queue[paho.MQTTMessage] = queue.Queue()
        self.client = paho.Client(CallbackAPIVersion.VERSION2, client_id=f"t-{uuid.uuid4().hex}")
        self.client.tls_set(ca_certs=str(broker.ca_path), cert_reqs=ssl.CERT_REQUIRED)
        self.client.username_pw_set(user, broker.credentials[user])
        subscribed = queue.Queue()
        self.client.on_subscribe = lambda *_: subscribed.put(True)
        self.client.on_message = lambda _c, _u, msg: self.messages.put(msg)
        self.client.connect("127.0.0.1", broker.port)
        self.client.loop_start()
        self.client.subscribe([(f, 1) for f in filters])
        subscribed.get(timeout=WAIT_S)

    def collect(self, quiet_s: float = 1.0) -> list[paho.MQTTMessage]:
        """Every message delivered until nothing came for `quiet_s`."""
        seen = []
        while True:
            try:
                seen.append(self.messages.get(timeout=quiet_s))
            except queue.Empty:
                return seen

    def close(self) -> None:
        self.client.disconnect()
        self.client.loop_stop()


def by_topic(messages: list[paho.MQTTMessage]) -> dict[str, paho.MQTTMessage]:
    """Topic -> its last message."""
    return {m.topic: m for m in messages}


@contextmanager
def subscriber(broker: SecureMosquittoServer, user: str, *filters: str) -> Iterator[Subscriber]:
    s = Subscriber(broker, user, *filters)
    try:
        yield s
    finally:
        s.close()


def broker_settings(broker: SecureMosquittoServer, user: str) -> MqttSettings:
    return MqttSettings.from_url(
        broker.url_for(user),
        ca_cert=str(broker.ca_path),
        client_id=f"t-{uuid.uuid4().hex[:8]}",
        protocol="5",
    )


@pytest.fixture
def ha_env(marts, mosquitto_tls: SecureMosquittoServer, monkeypatch: pytest.MonkeyPatch):
    for key, value in mosquitto_tls.env_for("pipeline").items():
        monkeypatch.setenv(key, value)
    monkeypatch.setenv("MQTT_CLIENT_ID", f"pipeline-{uuid.uuid4().hex[:8]}")
    monkeypatch.setenv("HOMEASSISTANT_ENABLED", "true")
    return marts


def latest_figures(live: Path) -> dict[tuple[str, str], tuple]:
    """(source, key) -> what HA should get, straight from DuckDB."""
    with duckdb.connect(str(live), read_only=True) as con:
        rows = con.execute(
            """
            select e.source, e.date_jst, e.daily_energy_kwh, c.cost_yen,
                   p.projected_total_yen, p.period_start, p.period_end
            from fct_daily_energy e
            join fct_daily_cost c using (source, date_jst)
            join fct_billing_period p
              on p.source = e.source and e.date_jst >= p.period_start and e.date_jst < p.period_end
            qualify e.date_jst = max(e.date_jst) over (partition by e.source)
            """
        ).fetchall()
    figures = {}
    for source, day, kwh, cost, projected, start, end in rows:
        figures[(source, "daily_energy")] = (kwh, day)
        figures[(source, "daily_cost")] = (cost, day)
        figures[(source, "period_projection")] = (projected, start, end)
    return figures


@pytest.mark.timeout(180)
def test_pipeline_publishes_retained_sensors_home_assistant_can_read(
    ha_env, mosquitto_tls: SecureMosquittoServer
) -> None:
    assert ha_env.build(HomeAssistantPublishDay(date=DaySet(ha_env.days)))
    assert HomeAssistantPublishDay.bulk_complete(iter(ha_env.days)) == ha_env.days
    expected = latest_figures(ha_env.duckdb)
    assert {source for source, _ in expected} == set(ha_env.sources)

    # Home Assistant subscribes after the fact: retained configs and states are waiting.
    with subscriber(mosquitto_tls, "homeassistant", "homeassistant/#", "home/energy/#") as sub:
        seen = by_topic(sub.collect())
    marks = [f"/{s}/" for s in ha_env.sources] + [f"/{ha.object_id(s, '')}" for s in ha_env.sources]
    ours = {t: m for t, m in seen.items() if any(mark in t for mark in marks)}
    for (source, key), figure in expected.items():
        config_msg = ours.pop(ha.config_topic(source, key))
        state_msg = ours.pop(ha.state_topic(source, key))
        assert config_msg.retain and state_msg.retain
        config = json.loads(config_msg.payload)
        assert ha_problems(config_msg.topic, config) == []
        assert config["state_topic"] == state_msg.topic
        state, last_reset = rendered(config, state_msg.payload)
        assert state == figure[0]
        if key == "period_projection":
            payload = json.loads(state_msg.payload)
            assert (payload["period_start"], payload["period_end"]) == tuple(
                d.isoformat() for d in figure[1:]
            )
        else:
            assert last_reset == datetime.combine(figure[1], datetime.min.time(), JST)
    assert ours == {}, "published more than the three daily sensors per source"


def test_only_each_sources_latest_day_is_published(ha_env) -> None:
    zone = JST
    with duckdb.connect(str(ha_env.duckdb), read_only=True) as con:
        older = household_messages(con, ha_env.days[:-1], zone, "homeassistant")
        latest = household_messages(con, ha_env.days[-1:], zone, "homeassistant")
    assert older == []
    assert len(latest) == 2 * 3 * len(ha_env.sources)  # config and state of three sensors


def test_disabled_is_complete_without_touching_the_broker(marts, monkeypatch) -> None:
    monkeypatch.setenv("HOMEASSISTANT_ENABLED", "false")
    monkeypatch.setenv("MQTT_BROKER_URL", "mqtt://127.0.0.1:9")
    Register.clear_instance_cache()
    assert HomeAssistantPublishDay(date=DaySet(marts.days)).complete()
    assert HomeAssistantPublishDay.bulk_complete(iter(marts.days)) == marts.days


@pytest.mark.parametrize(
    ("user", "topic"),
    [
        ("pipeline", "home/power"),
        ("pipeline", "home/energy/meter1/power"),
        ("pipeline", "homeassistant/sensor/other_vendor/thing/config"),
        ("pipeline", "homeassistant/switch/home_energy/meter1_power/config"),
        ("gateway", "home/energy/meter1/daily_energy"),
        ("gateway", "home/power"),
        ("homeassistant", "home/energy/meter1/daily_cost"),
        ("edge", "home/energy/meter1/power"),
    ],
)
def test_the_acl_refuses_every_other_topic(
    mosquitto_tls: SecureMosquittoServer, user: str, topic: str
) -> None:
    with pytest.raises(PipelineError, match=re.escape(topic) + r".*Not authorized"):
        publish(broker_settings(mosquitto_tls, user), [Message(topic, b"{}")], WAIT_S)


@pytest.mark.parametrize(
    ("user", "key"),
    [("pipeline", "daily_energy"), ("pipeline", "period_projection"), ("gateway", "power")],
)
def test_the_acl_allows_each_publisher_its_sensors(
    mosquitto_tls: SecureMosquittoServer, user: str, key: str
) -> None:
    source = f"acl{uuid.uuid4().hex[:6]}"
    config = ha.encode(ha.discovery_config(source, key))
    messages = [
        Message(ha.config_topic(source, key), config),
        Message(ha.state_topic(source, key), b"{}"),
    ]
    publish(broker_settings(mosquitto_tls, user), messages, WAIT_S)
    with (
        subscriber(mosquitto_tls, "homeassistant", "homeassistant/#", "home/energy/#") as ha_sub,
        subscriber(mosquitto_tls, "edge", "#") as snooper,
    ):
        assert {m.topic for m in messages} <= {m.topic for m in ha_sub.collect()}
        assert not any(source in m.topic for m in snooper.collect(0.5)), "the edge reads nothing"
    # Clear the retained messages again.
    publish(broker_settings(mosquitto_tls, user), [Message(m.topic, b"") for m in messages], WAIT_S)


# --- The gateway's live power ---------------------------------------------------------------


def edge_publish(broker: SecureMosquittoServer, readings: list[Reading]) -> None:
    """As the edge does: each source on its own topic (the ACL lets `edge` write meter1's)."""
    settings = broker_settings(broker, "edge")
    messages = [
        Message(source_topic("home/power", r.source), to_payload(r), retain=False) for r in readings
    ]
    publish(settings, messages, WAIT_S)


@pytest.mark.timeout(90)
def test_gateway_publishes_live_power_throttled(
    influx: InfluxServer, mosquitto_tls: SecureMosquittoServer, tmp_path: Path
) -> None:
    live = "meter1"  # the one source deploy/mosquitto lets the edge publish
    env = {
        **influx.env(),
        **mosquitto_tls.env_for("gateway"),
        "MQTT_CLIENT_ID": f"gateway-{uuid.uuid4().hex[:8]}",
        "HOMEASSISTANT_ENABLED": "true",
        "GATEWAY_HOMEASSISTANT_POWER_SECONDS": "4",
        "GATEWAY_FLUSH_SECONDS": "0.05",
    }
    with (
        GatewayServer(tmp_path / "gw", env) as gateway,
        subscriber(mosquitto_tls, "homeassistant", "homeassistant/#", "home/energy/#") as sub,
    ):
        wait_for(lambda: healthy(gateway), 15, "the gateway's /healthz")
        now = datetime.now(UTC)
        # An edge replaying an hour-old reading (not live power), then a burst within the
        # interval (one state).
        edge_publish(
            mosquitto_tls, [Reading(ts=now - timedelta(hours=1), source=live, instant_power_w=9.0)]
        )
        burst = [
            Reading(ts=now + timedelta(seconds=i), source=live, instant_power_w=500.0 + i)
            for i in range(5)
        ]
        for r in burst:
            edge_publish(mosquitto_tls, [r])
        first = sub.collect(2.0)
        states = [m for m in first if m.topic == ha.state_topic(live, "power")]
        assert len(states) == 1, "the burst within the interval gives one state"
        assert not states[0].retain
        assert rendered(ha.discovery_config(live, "power"), states[0].payload)[0] == 500.0
        config_msg = by_topic(first)[ha.config_topic(live, "power")]
        assert ha_problems(config_msg.topic, json.loads(config_msg.payload)) == []
        # After the interval the newest reading goes out again.
        time.sleep(4.5)
        edge_publish(
            mosquitto_tls, [Reading(ts=datetime.now(UTC), source=live, instant_power_w=640.0)]
        )
        later = [m for m in sub.collect(2.0) if m.topic == ha.state_topic(live, "power")]
        assert [rendered(ha.discovery_config(live, "power"), m.payload)[0] for m in later] == [
            640.0
        ]
    # Retained: Home Assistant starting later still discovers the sensor. (One connection per
    # broker user at a time: the broker makes the user name the client id.)
    with subscriber(mosquitto_tls, "homeassistant", config_msg.topic) as late:
        (retained,) = late.collect(1.0)
    assert retained.retain and retained.payload == config_msg.payload
    # Leave no retained config of this test's source behind on the shared broker.
    clear = [Message(ha.config_topic(live, "power"), b"")]
    publish(broker_settings(mosquitto_tls, "gateway"), clear, WAIT_S)


def healthy(gateway: GatewayServer) -> bool:
    try:
        return httpx.get(f"{gateway.url}/healthz", timeout=1).status_code == 200
    except httpx.HTTPError:
        return False


def test_a_bad_broker_url_fails_in_one_line_without_the_password(ha_env, monkeypatch) -> None:
    monkeypatch.setenv("MQTT_BROKER_URL", "http://pipeline:s3cret@broker:8883")
    result = subprocess.run(
        [
            str(Path(sys.executable).with_name("luigi")),
            "--module",
            "pipeline",
            "HomeAssistantPublishDay",
            "--date",
            str(ha_env.days[-1]),
            "--local-scheduler",
        ],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 40
    assert "MQTT_BROKER_URL must start with mqtt:// or mqtts://" in result.stderr
    assert "s3cret" not in result.stdout + result.stderr
    assert not HomeAssistantPublishDay(date=ha_env.days[-1]).complete()


def test_range_daily_publishes_the_range_once(ha_env) -> None:
    command = [
        str(Path(sys.executable).with_name("luigi")),
        "--module",
        "pipeline",
        "RangeDaily",
        "--of",
        "HomeAssistantPublishDay",
        "--start",
        str(ha_env.days[0]),
        "--stop",
        str(ha_env.days[-1] + timedelta(days=1)),
        "--days-back",
        "1000",
        "--local-scheduler",
    ]
    first = subprocess.run(command, capture_output=True, text=True, timeout=180)
    assert first.returncode == 0, first.stderr
    # Once for the range, the latest day: a config and a state of three sensors per source.
    assert f"published {2 * 3 * len(ha_env.sources)} message(s)" in first.stderr
    again = subprocess.run(command, capture_output=True, text=True, timeout=180)
    assert again.returncode == 0, again.stderr
    assert "published" not in again.stderr
