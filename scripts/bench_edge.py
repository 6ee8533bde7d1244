#!/usr/bin/env python
"""The edge's figures: outbox speed, backlog drain, 45-day read-back, memory and install size.

    .venv/bin/python scripts/bench_edge.py [--backlog 86400] [--stores 2000]
        [--edge-venv /tmp/edgevenv] [--rss-seconds 60]

1. Stores `--stores` readings one commit each (what the meter loop does, synchronous=FULL).
2. Fills an outbox with `--backlog` readings (a 24-hour outage at 1 Hz), starts a local TLS
   mosquitto (the repository's deploy/mosquitto configuration) and a subscriber, and times the
   publisher until the outbox is empty and every reading reached the subscriber.
   Goal: the backlog drains within 60 s.
3. A first start reads back 45 days of half-hour registers from the simulated meter at the
   defaults (a request at most every 1 s, live polls every 10 s, the read-back's 6 requests
   a minute) on a virtual clock: the meter time it takes, the requests, and the live polls
   that went on meanwhile. Goal: 2,160 registers or more, live polling never paused.
4. `python -m edge` from a venv with only `.[edge]` installed (`--edge-venv`; make it with
   `python3 -m venv /tmp/edgevenv && /tmp/edgevenv/bin/pip install '.[edge]'`) against the
   simulator on a pty and the TLS broker, for `--rss-seconds`: its steady-state RSS.
   Goal: at most 40 MiB.
5. That venv's size on disk, and the `[edge]` distributions alone (pip and setuptools come
   with every venv). Goal: the [edge] install at most 30 MiB.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import queue
import subprocess
import sys
import tempfile
import time
from datetime import UTC, datetime, timedelta
from itertools import pairwise
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from contracts.message import Reading  # noqa: E402
from contracts.mqtt import MqttSettings, make_client  # noqa: E402
from devstack.secure_broker import SecureMosquittoServer  # noqa: E402
from devstack.virtual_edge import PASSWORD, ROUTE_B_ID, VirtualEdge  # noqa: E402
from edge.app import EdgeConfig  # noqa: E402
from edge.outbox import Outbox  # noqa: E402
from edge.publisher import Publisher  # noqa: E402
from edge.recovery import floor_half_hour  # noqa: E402
from edge.simulator import SimulatedMeter, VirtualClock  # noqa: E402

GOAL_S = 60.0
READBACK_REGISTERS = 45 * 48
RSS_GOAL_MIB = 40.0
INSTALL_GOAL_MIB = 30.0
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


def bench_readback(folder: Path) -> None:
    """A first start reading back 45 days at the default pacing, on a virtual clock."""
    clock = VirtualClock(T0.timestamp() + 3600 * 7.3)
    meter = SimulatedMeter(clock=clock.time, history_days=45)
    config = EdgeConfig(serial_port="virtual")  # the defaults: 10 s polls, 1 s spacing, 6/min
    edge = VirtualEdge(folder / "readback.db", config, clock, meter)
    recovery = edge.loop.recovery
    assert recovery is not None
    started, cpu = clock.time(), time.process_time()
    while True:
        edge.run_for(60)
        now = datetime.fromtimestamp(clock.time(), UTC)
        owed = floor_half_hour(now - timedelta(seconds=config.recovery.settle_s))
        if recovery.watermark and recovery.watermark >= owed:
            break
    meter_minutes = (clock.time() - started) / 60
    cpu = time.process_time() - cpu
    readings = edge.outbox.oldest(10**7)
    live = [r.ts for r in readings if r.instant_power_w is not None]
    gap = max((b - a).total_seconds() for a, b in pairwise(live))
    registers = len(readings) - len(live)
    verdict = "OK" if registers >= READBACK_REGISTERS else "MISSED"
    print(
        f"read-back: {registers:,} half-hour registers (45 days + today) in {meter_minutes:.1f} "
        f"min of meter time, {edge.driver.requests - len(live):,} read-back requests at "
        f"{config.recovery.requests_per_minute:g}/min, {len(live):,} live polls meanwhile "
        f"(longest gap {gap:.1f} s for {config.poll_seconds:g} s polls); {cpu:.1f} s CPU to "
        f"simulate; goal >= {READBACK_REGISTERS:,} registers: {verdict}"
    )
    edge.close()


def edge_rss_mib(folder: Path, python: str, seconds: float) -> tuple[float, float]:
    """`python -m edge` (from `python`'s install) on the simulator and the TLS broker: the
    RSS after start-up and at the end (MiB), sampled from /proc."""
    simulator = subprocess.Popen(
        [sys.executable, "-m", "edge.simulator"],
        cwd=REPO,
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        text=True,
    )
    assert simulator.stdout is not None
    pty = simulator.stdout.readline().strip()
    with SecureMosquittoServer(folder / "rss-broker") as broker:
        env = {
            **{k: v for k, v in os.environ.items() if not k.startswith(("EDGE_", "MQTT_"))},
            **broker.env_for("edge"),
            "EDGE_SERIAL_PORT": pty,
            "EDGE_POLL_SECONDS": "1",
            "EDGE_OUTBOX_PATH": str(folder / "rss-outbox.db"),
            "EDGE_RECOVERY_REQUESTS_PER_MINUTE": "60",
            "BROUTE_ID": ROUTE_B_ID,
            "BROUTE_PASSWORD": PASSWORD,
            "SOURCE_DEFAULT": "meter1",
            "PYTHONPATH": "",
        }
        edge = subprocess.Popen(
            [python, "-m", "edge"],
            cwd=folder,  # not the repository: the installed package is what runs
            env=env,
            stdout=subprocess.DEVNULL,
            stderr=(folder / "rss-edge.log").open("ab"),
        )
        try:
            time.sleep(min(10.0, seconds / 3))
            early = _rss_mib(edge.pid)
            time.sleep(seconds - min(10.0, seconds / 3))
            late = _rss_mib(edge.pid)
        finally:
            edge.terminate()
            edge.wait(20)
            simulator.terminate()
            simulator.wait(10)
    return early, late


def _rss_mib(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    raise RuntimeError(f"no VmRSS for process {pid} (did it exit?)")


def install_sizes_mib(venv: Path) -> tuple[float, float, list[str]]:
    """(the whole venv, the [edge] distributions alone, their names) in MiB on disk."""
    whole = sum(f.stat().st_size for f in venv.rglob("*") if f.is_file() and not f.is_symlink())
    listing = subprocess.run(
        [
            str(venv / "bin" / "python"),
            "-c",
            "import importlib.metadata as m, json;"
            "print(json.dumps({d.metadata['Name']: sum((f.size or 0) for f in d.files or [])"
            " for d in m.distributions()}))",
        ],
        capture_output=True,
        text=True,
        check=True,
    )
    sizes = json.loads(listing.stdout)
    edge = {name: size for name, size in sizes.items() if name not in ("pip", "setuptools")}
    return whole / 2**20, sum(edge.values()) / 2**20, sorted(edge)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--backlog", type=int, default=86_400)
    parser.add_argument("--stores", type=int, default=2_000)
    parser.add_argument("--edge-venv", type=Path, default=Path("/tmp/edgevenv"))
    parser.add_argument("--rss-seconds", type=float, default=60.0)
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
        bench_readback(folder)
        python = args.edge_venv / "bin" / "python"
        if not python.exists():
            print(f"edge RSS and install size: no venv at {args.edge_venv} (see --help)")
            return
        early, late = edge_rss_mib(folder, str(python), args.rss_seconds)
        verdict = "OK" if max(early, late) <= RSS_GOAL_MIB else "MISSED"
        print(
            f"edge RSS ([edge] install, {args.edge_venv}): {early:.1f} MiB after start-up, "
            f"{late:.1f} MiB after {args.rss_seconds:.0f} s of 1 s polls with read-back; "
            f"goal <= {RSS_GOAL_MIB:.0f} MiB: {verdict}"
        )
    whole, edge, names = install_sizes_mib(args.edge_venv)
    verdict = "OK" if edge <= INSTALL_GOAL_MIB else "MISSED"
    print(
        f"[edge] install: {edge:.1f} MiB ({', '.join(names)}); the whole venv {whole:.1f} MiB "
        f"with pip and setuptools; goal <= {INSTALL_GOAL_MIB:.0f} MiB: {verdict}"
    )


if __name__ == "__main__":
    main()
