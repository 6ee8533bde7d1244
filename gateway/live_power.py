"""Live power for Home Assistant: the newest reading of each source, throttled, over MQTT.

The gateway calls `offer` with what it has just written to InfluxDB. At most one state per
source every `interval_s`, and only for readings younger than HA's `expire_after` (an edge
replaying an outage sends old readings: they are history, not live power). The retained
discovery config goes out with a source's first state and again every CONFIG_REFRESH_S, so a
broker that lost its retained messages gets it back without a gateway restart.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Iterable
from datetime import UTC, datetime

import paho.mqtt.client as mqtt

from contracts import homeassistant as ha
from contracts.message import Reading

log = logging.getLogger(__name__)

CONFIG_REFRESH_S = 3600.0


class LivePowerPublisher:
    def __init__(
        self,
        client: mqtt.Client,
        interval_s: float,
        discovery_prefix: str,
    ) -> None:
        self.client = client
        self.interval_s = interval_s
        self.discovery_prefix = discovery_prefix
        self._state_sent: dict[str, float] = {}
        self._config_sent: dict[str, float] = {}

    def offer(self, readings: Iterable[Reading]) -> None:
        try:
            self._offer(readings)
        except Exception:  # the flusher thread calls us: a bug here must not stop the writes
            log.exception("live power for Home Assistant failed")

    def _offer(self, readings: Iterable[Reading]) -> None:
        newest: dict[str, Reading] = {}
        for r in readings:
            if r.instant_power_w is not None and (
                r.source not in newest or r.ts > newest[r.source].ts
            ):
                newest[r.source] = r
        now, wall = time.monotonic(), datetime.now(UTC)
        for source, reading in newest.items():
            if (wall - reading.ts).total_seconds() > ha.POWER_EXPIRE_AFTER_S:
                continue
            if now - self._state_sent.get(source, -self.interval_s) < self.interval_s:
                continue
            if now - self._config_sent.get(source, -CONFIG_REFRESH_S) >= CONFIG_REFRESH_S:
                config = ha.encode(ha.discovery_config(source, ha.POWER.key))
                topic = ha.config_topic(source, ha.POWER.key, self.discovery_prefix)
                self.client.publish(topic, config, qos=1, retain=True)
                self._config_sent[source] = now
            assert reading.instant_power_w is not None  # newest holds readings with a power
            state = ha.power_state(reading.instant_power_w, reading.ts)
            # QoS 0: a live value is worth nothing late.
            topic = ha.state_topic(source, ha.POWER.key)
            info = self.client.publish(topic, state, qos=0, retain=ha.POWER.retain_state)
            if info.rc == mqtt.MQTT_ERR_SUCCESS:
                self._state_sent[source] = now
            else:
                log.debug("live power for %s not sent: %s", source, mqtt.error_string(info.rc))
