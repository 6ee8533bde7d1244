#!/usr/bin/env python
"""Edge outbox speed: readings stored per second, and the drain of a 24-hour backlog.

    .venv/bin/python scripts/bench_edge.py [--backlog 86400] [--stores 2000]

1. Stores `--stores` readings one commit each (what the meter loop does, synchronous=FULL).
2. Fills an outbox with `--backlog` readings (a 24-hour outage at 1 Hz), starts a local TLS
   mosquitto (the repository's deploy/mosquitto configuration) and a subscriber, and times the
   publisher until the outbox is empty and every reading reached the subscriber.
Goal: the backlog drains within 60 s.
"""

from __future__ import annotations

import argparse
import queue
import sys
import tempfile
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import contextlib

from contracts.message import Reading
from contracts.mqtt import MqttSettings, make_client
from devstack.secure_broker import SecureMosquittoServer
from edge.outbox import Outbox
from edge.publisher import Publisher

GOAL_S = 60.0
T0 = datetime(2025, 12, 17, tzinfo=UTC)


def reading(i: int) -> Reading:
    return Reading(
        ts=T0 + timedelta(seconds=i),
        source="meter1",
        instant_power_w=300.0 + i % 700,
        energy_import_kwh=12345.6 + i / 3600,
        energy_export_kwh=0.0,
    )


def bench_store(folder: Path, count: int) -> float:
    with Outbox(folder / "store.db") as outbox:
        started = time.perf_counter()
        for i in range(count):
            outbox.add(reading(i))
        return count / (time.perf_counter() - started)


def bench_drain(folder: Path, backlog: int) -> tuple[float, int]:
    path = folder / "backlog.db"
    with Outbox(path) as outbox:
        outbox.add_many(reading(i) for i in range(backlog))
    with SecureMosquittoServer(folder / "broker") as broker:
        received: queue.Queue[int] = queue.Queue()
        sub = make_client(
            MqttSettings.from_url(
                broker.url_for("gateway"), ca_cert=str(broker.ca_path), client_id="bench-sub"
            )
        )
        # The edge writes <topic>/<source>.
        sub.on_connect = lambda c, *_: c.subscribe("home/power/#", qos=1)
        sub.on_message = lambda c, u, msg: received.put(msg.payload.count(b'"ts"'))
        sub.loop_start()
        time.sleep(1.0)
        edge = MqttSettings.from_url(
            broker.url_for("edge"), ca_cert=str(broker.ca_path), client_id="bench-edge"
        )
        started = time.perf_counter()
        publisher = Publisher(path, edge).start()
        arrived = 0
        with Outbox(path) as outbox:
            deadline = started + 10 * GOAL_S
            while (outbox.pending() or arrived < backlog) and time.perf_counter() < deadline:
                with contextlib.suppress(queue.Empty):
                    arrived += received.get(timeout=0.1)
        elapsed = time.perf_counter() - started
        publisher.stop()
        sub.disconnect()
        sub.loop_stop()
    return elapsed, arrived


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--backlog", type=int, default=86_400)
    parser.add_argument("--stores", type=int, default=2_000)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="bench-edge-") as tmp:
        folder = Path(tmp)
        rate = bench_store(folder, args.stores)
        print(f"outbox store: {rate:,.0f} readings/s (one commit each, WAL, synchronous=FULL)")
        elapsed, arrived = bench_drain(folder, args.backlog)
    verdict = "OK" if elapsed <= GOAL_S and arrived >= args.backlog else "MISSED"
    print(
        f"drain: {arrived:,}/{args.backlog:,} readings delivered over TLS in {elapsed:.1f} s "
        f"({arrived / elapsed:,.0f} readings/s); goal <= {GOAL_S:.0f} s: {verdict}"
    )


if __name__ == "__main__":
    main()
