"""The household's daily figures as Home Assistant sensors, published over MQTT.

Home Assistant cannot backdate a state: whatever arrives counts now. So only each source's
latest day is published (a backfill or a rerun of an older day publishes nothing), its daily
totals carry that day's midnight as `last_reset` (contracts/homeassistant.py says why), and
everything is retained: HA gets the current figures when it (re)connects, and publishing the
same day again is a no-op for its statistics.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import date, tzinfo

import duckdb
import paho.mqtt.client as paho

from contracts import homeassistant as ha
from contracts.mqtt import MqttSettings, make_client
from pipeline.database import has_table
from pipeline.days import day_window_utc
from pipeline.errors import PipelineError

logger = logging.getLogger("luigi-interface")


@dataclass(frozen=True)
class Message:
    topic: str
    payload: bytes
    retain: bool = True  # discovery configs always are


def household_messages(
    con: duckdb.DuckDBPyConnection, days: Iterable[date], zone: tzinfo, prefix: str
) -> list[Message]:
    """Discovery configs and states for every source whose latest day is one of `days`."""
    wanted = set(days)
    latest = con.execute(
        "select source, date_jst, daily_energy_kwh from fct_daily_energy "
        "where daily_energy_kwh is not null "
        "qualify date_jst = max(date_jst) over (partition by source) order by source"
    ).fetchall()
    messages = []
    for source, day, kwh in latest:
        if day not in wanted:
            continue
        midnight = day_window_utc(day, zone)[0].astimezone(zone)
        states = {ha.DAILY_ENERGY.key: ha.daily_state(kwh, day, midnight)}
        cost = _one(con, "fct_daily_cost", "cost_yen", "date_jst = ?", source, day)
        if cost is not None:
            states[ha.DAILY_COST.key] = ha.daily_state(cost[0], day, midnight)
        period = _one(
            con,
            "fct_billing_period",
            "projected_total_yen, period_start, period_end",
            "period_start <= ? and ? < period_end",
            source,
            day,
            day,
        )
        if period is not None and period[0] is not None:
            states[ha.PERIOD_PROJECTION.key] = ha.projection_state(*period)
        for key, state in states.items():
            config = ha.encode(ha.discovery_config(source, key))
            messages.append(Message(ha.config_topic(source, key, prefix), config))
            messages.append(
                Message(ha.state_topic(source, key), state, ha.SENSORS[key].retain_state)
            )
    return messages


def _one(
    con: duckdb.DuckDBPyConnection, table: str, columns: str, where: str, source: str, *args: object
) -> tuple | None:
    """The row of `table` for a source and a condition, or None (also where no table exists)."""
    if not has_table(con, table):
        return None
    return con.execute(
        f"select {columns} from {table} where source = ? and {where}", [source, *args]
    ).fetchone()


def publish(settings: MqttSettings, messages: list[Message], timeout_s: float) -> None:
    """Publish at QoS 1 and wait until the broker acknowledged each one.

    The settings ask for MQTT 5, whose PUBACK carries a reason code: a topic the broker's ACL
    refuses fails the run with its name instead of disappearing silently.
    """
    client = make_client(settings)
    connected = threading.Event()
    refused: list[tuple[int, paho.ReasonCode]] = []
    connack: list[paho.ReasonCode] = []

    def on_connect(_c: paho.Client, _u: object, _f: object, reason_code, _p: object) -> None:
        connack.append(reason_code)
        connected.set()

    def on_publish(_c: paho.Client, _u: object, mid: int, reason_code, _p: object) -> None:
        if reason_code.is_failure:
            refused.append((mid, reason_code))

    client.on_connect = on_connect
    client.on_publish = on_publish
    deadline = time.monotonic() + timeout_s
    client.loop_start()
    try:
        if not connected.wait(timeout_s):
            raise PipelineError(f"no answer from the MQTT broker {settings} in {timeout_s:g}s")
        if connack[0].is_failure:
            raise PipelineError(f"the MQTT broker {settings} refused the connection: {connack[0]}")
        sent = [client.publish(m.topic, m.payload, qos=1, retain=m.retain) for m in messages]
        for info in sent:
            info.wait_for_publish(max(0.0, deadline - time.monotonic()))
        if not all(info.is_published() for info in sent):
            raise PipelineError(f"the MQTT broker {settings} did not acknowledge in {timeout_s:g}s")
    finally:
        client.disconnect()
        client.loop_stop()
    if refused:
        topics = {info.mid: m.topic for info, m in zip(sent, messages, strict=True)}
        mid, reason = refused[0]
        raise PipelineError(
            f"the MQTT broker refused {len(refused)} publish(es), e.g. {topics[mid]} ({reason}); "
            f"check its ACL (deploy/mosquitto/aclfile) for user {settings.username}"
        )
    logger.info("published %d message(s) to %s", len(messages), settings)
