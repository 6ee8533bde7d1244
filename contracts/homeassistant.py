"""Home Assistant's MQTT discovery for the household's sensors (design.md section 9).

Standard library only: the gateway (live power) and the pipeline (daily energy, cost, the
billing period's projection) both build their topics and payloads here, so the two sides
describe one device per source the same way.

Topics, for a source `meter1` and a sensor key such as `daily_energy`:

    homeassistant/sensor/home_energy/meter1_daily_energy/config   discovery, retained
    home/energy/meter1/daily_energy                               state, JSON

The discovery topic puts `home_energy` in HA's optional node_id level
(`<prefix>/<component>/[<node_id>/]<object_id>/config`) rather than in front of the object id:
a mosquitto ACL wildcard matches whole levels only, so this is what lets the broker's ACL allow
exactly our sensors (`homeassistant/sensor/home_energy/+/config`) and nobody else's.

Which state class, and why (HA's sensor rules; docs/home-assistant.md has the full list):
- A daily total is neither a meter reading nor a measurement. As `total_increasing`, HA would
  count only the rise from one day's total to the next (a drop reads as a meter reset), so
  daily energy and cost are `total` with `last_reset` = the local midnight the day began:
  each new day starts a new cycle and counts in full, and republishing the same day (a rerun)
  changes nothing, or adds only the difference when late data changed the total.
- `monetary` allows no state class but `total`; the projected bill is not an accumulating
  total, so it has no state class (HA keeps its history, not long-term statistics).
- Live power is `power`/`W`/`measurement`.
"""

from __future__ import annotations

import hashlib
import json
import re
from dataclasses import dataclass
from datetime import date, datetime

DISCOVERY_PREFIX = "homeassistant"
NODE_ID = "home_energy"
STATE_PREFIX = "home/energy"
ORIGIN = {"name": "home-energy-pipeline"}
# A live power state older than this is "unavailable" in HA: the gateway stopped or the meter
# went quiet. The gateway publishes every 10 s by default, so 2 minutes is many misses.
POWER_EXPIRE_AFTER_S = 120
# HA's object and node ids: letters, digits, `_` and `-` (a source may also hold dots).
_OBJECT_ID = re.compile(r"[A-Za-z0-9_-]+")


@dataclass(frozen=True)
class SensorKind:
    key: str
    name: str
    device_class: str
    unit: str
    state_class: str | None
    daily: bool  # the state carries the day it totals; HA's last_reset is that day's midnight
    retain_state: bool  # HA gets the state again when it (re)connects
    expire_after_s: int | None = None
    precision: int | None = None


DAILY_ENERGY = SensorKind(
    key="daily_energy",
    name="Energy yesterday",
    device_class="energy",
    unit="kWh",
    state_class="total",
    daily=True,
    retain_state=True,
    precision=2,
)
DAILY_COST = SensorKind(
    key="daily_cost",
    name="Cost yesterday",
    device_class="monetary",
    unit="JPY",
    state_class="total",
    daily=True,
    retain_state=True,
    precision=0,
)
PERIOD_PROJECTION = SensorKind(
    key="period_projection",
    name="Projected bill",
    device_class="monetary",
    unit="JPY",
    state_class=None,
    daily=False,
    retain_state=True,
    precision=0,
)
# Not retained: a live value is worth nothing late, or after a restart.
POWER = SensorKind(
    key="power",
    name="Power",
    device_class="power",
    unit="W",
    state_class="measurement",
    daily=False,
    retain_state=False,
    expire_after_s=POWER_EXPIRE_AFTER_S,
    precision=0,
)
SENSORS = {s.key: s for s in (DAILY_ENERGY, DAILY_COST, PERIOD_PROJECTION, POWER)}


def object_id(source: str, key: str) -> str:
    """`<source>_<key>`; a source with characters HA refuses gets them replaced and a short
    hash of its real name appended, so two sources never share an id."""
    if _OBJECT_ID.fullmatch(source):
        return f"{source}_{key}"
    digest = hashlib.sha256(source.encode()).hexdigest()[:8]
    return f"{re.sub(r'[^A-Za-z0-9_-]', '_', source)}_{digest}_{key}"


def config_topic(source: str, key: str, prefix: str = DISCOVERY_PREFIX) -> str:
    return f"{prefix}/sensor/{NODE_ID}/{object_id(source, key)}/config"


def state_topic(source: str, key: str) -> str:
    return f"{STATE_PREFIX}/{source}/{key}"


def device(source: str) -> dict[str, object]:
    """One HA device per meter: every sensor of a source names the same identifiers."""
    return {
        "identifiers": [f"{NODE_ID}_{object_id(source, 'meter')}"],
        "name": f"Home energy {source}",
        "manufacturer": "home-energy-pipeline",
        "model": "Smart meter (Wi-SUN B-route)",
    }


def discovery_config(source: str, key: str) -> dict[str, object]:
    """The retained discovery payload of one sensor."""
    kind = SENSORS[key]
    config: dict[str, object] = {
        "name": kind.name,
        "unique_id": f"{NODE_ID}_{object_id(source, key)}",
        "state_topic": state_topic(source, key),
        "value_template": "{{ value_json.value }}",
        # The rest of the state (the day a total is for, the billing period) as attributes.
        "json_attributes_topic": state_topic(source, key),
        "device_class": kind.device_class,
        "unit_of_measurement": kind.unit,
        "device": device(source),
        "origin": ORIGIN,
    }
    if kind.state_class:
        config["state_class"] = kind.state_class
    if kind.daily:
        config["last_reset_value_template"] = "{{ value_json.last_reset }}"
    if kind.expire_after_s:
        config["expire_after"] = kind.expire_after_s
    if kind.precision is not None:
        config["suggested_display_precision"] = kind.precision
    return config


def daily_state(value: float, day: date, midnight: datetime) -> bytes:
    """A daily total's state: the value, its day, and the aware local midnight it began."""
    return encode({"value": value, "date": day.isoformat(), "last_reset": midnight.isoformat()})


def projection_state(value: float, period_start: date, period_end: date) -> bytes:
    """The billing period's projected bill; `period_end` is exclusive."""
    return encode(
        {
            "value": value,
            "period_start": period_start.isoformat(),
            "period_end": period_end.isoformat(),
        }
    )


def power_state(value: float, ts: datetime) -> bytes:
    return encode({"value": value, "ts": ts.isoformat()})


def encode(value: object) -> bytes:
    """Compact JSON with sorted keys: the same payload is byte-for-byte the same message."""
    return json.dumps(value, separators=(",", ":"), sort_keys=True).encode()
