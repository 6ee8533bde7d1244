"""The reading message contract (design.md section 1) and the broker URL (section 7)."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta, timezone

import pytest

from contracts.message import (
    MAX_PAYLOAD_BYTES,
    InvalidReading,
    Reading,
    format_ts,
    parse_payload,
    parse_ts,
    source_setting,
    to_payload,
)
from contracts.mqtt import MqttSettings, make_client
from contracts.settings import Environment, SettingError

NOW = datetime(2025, 12, 17, 3, 4, 5, 250000, tzinfo=UTC)


def reading(**fields: object) -> Reading:
    values: dict = {"ts": NOW, "source": "meter1", "instant_power_w": 512.5} | fields
    return Reading(**values)


def test_reading_round_trips_through_payload_as_object_and_array() -> None:
    one = reading(energy_import_kwh=1234.5, seq=7)
    two = reading(ts=NOW + timedelta(seconds=10), instant_power_w=None, energy_export_kwh=0.0)
    assert json.loads(to_payload(one)) == {
        "ts": "2025-12-17T03:04:05.250Z",
        "source": "meter1",
        "instant_power_w": 512.5,
        "energy_import_kwh": 1234.5,
        "seq": 7,
    }
    assert parse_payload(to_payload(one), now=NOW).readings == [one]
    parsed = parse_payload(to_payload([one, two]), now=NOW)
    assert parsed.readings == [one, two] and parsed.rejected == []
    assert two.measurements == {"energy_export_kwh": 0.0}  # absent stays absent, not 0.0


def test_ts_is_utc_with_millisecond_precision() -> None:
    jst = timezone(timedelta(hours=9))
    r = reading(ts=datetime(2025, 12, 17, 12, 4, 5, 250999, tzinfo=jst))
    assert r.ts == NOW and r.ts.tzinfo == UTC
    assert format_ts(r.ts) == "2025-12-17T03:04:05.250Z"
    assert parse_ts("2025-12-17T12:04:05.25+09:00") == NOW
    assert parse_ts("2025-12-17T03:04:05Z") == NOW.replace(microsecond=0)
    for bad in ("2025-12-17T03:04:05.2501Z", "2025-12-17T03:04:05", "2025-13-17T03:04:05Z", "x"):
        with pytest.raises(InvalidReading):
            parse_ts(bad)
    with pytest.raises(InvalidReading, match="timezone-aware"):
        reading(ts=datetime(2025, 12, 17))


def test_ints_become_floats_and_bools_are_not_numbers() -> None:
    r = parse_payload(b'{"ts":"2025-12-17T03:04:05.250Z","instant_power_w":500}', now=NOW)
    assert r.readings[0].instant_power_w == 500.0
    assert isinstance(r.readings[0].instant_power_w, float)
    with pytest.raises(InvalidReading, match="must be a number, got boolean"):
        reading(instant_power_w=True)


def test_source_comes_from_field_then_topic_then_default() -> None:
    body = {"ts": "2025-12-17T03:04:05.250Z", "instant_power_w": 1}
    untagged = parse_payload(json.dumps(body), "home/power", fallback_source="house", now=NOW)
    assert untagged.readings[0].source == "house"
    assert parse_payload(json.dumps(body), "home/power/m2", now=NOW).readings[0].source == "m2"
    tagged = json.dumps(body | {"source": "m3"})
    assert parse_payload(tagged, "home/power", now=NOW).readings[0].source == "m3"
    mismatch = parse_payload(tagged, "home/power/m2", now=NOW)
    assert mismatch.readings == [] and "differs from the topic" in mismatch.rejected[0].reason
    bad_topic = parse_payload(json.dumps(body), "home/power/a b", now=NOW)
    assert "not a source name" in bad_topic.rejected[0].reason


GOOD = {"ts": "2025-12-17T03:04:05.250Z", "instant_power_w": 100.0}


@pytest.mark.parametrize(
    ("payload", "reason"),
    [
        (b"not json", "not JSON"),
        (b"\xff\xfe", "not JSON"),
        (b"[]", "empty array"),
        (b"[" * 100_000, "not JSON"),
        (b"x" * (MAX_PAYLOAD_BYTES + 1), "more than the limit"),
        (json.dumps("a string"), "must be a JSON object, got string"),
        (json.dumps({"instant_power_w": 1}), "missing ts"),
        (json.dumps({"ts": 1765940645, "instant_power_w": 1}), "ts must be a string, got int"),
        (json.dumps(GOOD | {"ts": "yesterday"}), "not RFC 3339"),
        (json.dumps(GOOD | {"ts": "2025-12-17T03:20:00.000Z"}), "in the future"),
        (json.dumps(GOOD | {"ts": "1970-01-01T00:00:10.000Z"}), "clock not set"),
        (
            json.dumps(GOOD | {"instant_power_w": "100"}),
            "instant_power_w must be a number, got string",
        ),
        (json.dumps(GOOD | {"instant_power_w": True}), "got boolean"),
        (json.dumps(GOOD | {"instant_power_w": [1]}), "got array"),
        (b'{"ts":"2025-12-17T03:04:05.250Z","instant_power_w":NaN}', "must be finite"),
        (b'{"ts":"2025-12-17T03:04:05.250Z","energy_import_kwh":Infinity}', "must be finite"),
        (b'{"ts":"2025-12-17T03:04:05.250Z","energy_import_kwh":1e999}', "must be finite"),
        (b'{"ts":"2025-12-17T03:04:05.250Z","energy_import_kwh":1' + b"0" * 400 + b"}", "range"),
        (json.dumps(GOOD | {"energy_import_kwh": -1.0}), "cannot be negative"),
        (json.dumps({"ts": GOOD["ts"], "seq": 3}), "no measurement"),
        (json.dumps(GOOD | {"source": "has space"}), "does not match"),
        (json.dumps(GOOD | {"source": "x" * 65}), "does not match"),
        (json.dumps(GOOD | {"source": 5}), "does not match"),
        (json.dumps(GOOD | {"seq": -1}), "seq must be a non-negative integer"),
        (json.dumps(GOOD | {"seq": 1.5}), "seq must be a non-negative integer"),
    ],
)
def test_bad_payload_is_rejected_with_reason(payload: bytes | str, reason: str) -> None:
    parsed = parse_payload(payload, "home/power", now=NOW)
    assert parsed.readings == []
    assert len(parsed.rejected) == 1
    assert reason in parsed.rejected[0].reason
    assert len(parsed.rejected[0].reason) < 400  # a reason never carries the payload


def test_mixed_array_keeps_good_elements_and_names_the_bad_one() -> None:
    bad = GOOD | {"instant_power_w": "oops"}
    parsed = parse_payload(json.dumps([GOOD, bad, GOOD | {"ts": "2025-12-17T03:04:06Z"}]), now=NOW)
    assert [r.ts.second for r in parsed.readings] == [5, 6]
    (rejected,) = parsed.rejected
    assert rejected.index == 1 and rejected.element == bad
    assert rejected.reason.startswith("element 1: instant_power_w")


@pytest.mark.parametrize("ts", ["0001-01-01T00:00:00+23:59", "9999-12-31T23:59:59.999-00:01"])
def test_ts_pushed_past_the_calendar_by_its_offset_rejects_only_its_element(ts: str) -> None:
    with pytest.raises(InvalidReading, match="out of range"):
        parse_ts(ts)
    payload = json.dumps([GOOD, GOOD | {"ts": ts}, GOOD | {"ts": "2025-12-17T03:04:06Z"}])
    parsed = parse_payload(payload, now=NOW)
    assert [r.ts.second for r in parsed.readings] == [5, 6]
    (rejected,) = parsed.rejected
    assert rejected.index == 1 and "out of range" in rejected.reason


def test_bad_source_default_is_a_startup_error() -> None:
    with pytest.raises(SettingError, match="SOURCE_DEFAULT"):
        source_setting(Environment({"SOURCE_DEFAULT": "no/slashes"}))


def test_broker_url_forms() -> None:
    plain = MqttSettings.from_url("mqtt://broker")
    assert (plain.host, plain.port, plain.tls, plain.username) == ("broker", 1883, False, None)
    tls = MqttSettings.from_url("mqtts://gw%40home:p%3Ass@broker.lan:18883", client_id="gw")
    assert (tls.host, tls.port, tls.tls) == ("broker.lan", 18883, True)
    assert (tls.username, tls.password) == ("gw@home", "p:ss")
    assert MqttSettings.from_url("mqtts://u:p@broker").port == 8883
    assert "p:ss" not in repr(tls) and "gw@home:***" in repr(tls)


@pytest.mark.parametrize(
    "url", ["http://u:secret@host", "mqtt://", "mqtt://u:secret@host:99999", "mqtt://h/path"]
)
def test_bad_broker_url_is_refused_without_showing_the_password(url: str) -> None:
    with pytest.raises(ValueError, match="MQTT_BROKER_URL") as info:
        MqttSettings.from_url(url)
    assert "secret" not in str(info.value)


def test_env_settings_and_client_factory(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MQTT_BROKER_URL", "mqtts://gateway:pw@localhost")
    monkeypatch.setenv("MQTT_TOPIC", "house/power")
    monkeypatch.setenv("MQTT_PROTOCOL", "5")
    settings = MqttSettings.from_env(Environment(), default_client_id="gateway-1")
    assert (settings.topic, settings.client_id, settings.protocol) == (
        "house/power",
        "gateway-1",
        "5",
    )
    client = make_client(settings, persistent_session=True, manual_ack=True)
    assert client.protocol == 5
    monkeypatch.setenv("MQTT_PROTOCOL", "4")
    with pytest.raises(ValueError, match="MQTT_PROTOCOL"):
        MqttSettings.from_env(Environment(), default_client_id="x")
