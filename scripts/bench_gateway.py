#!/usr/bin/env python3
"""Gateway benchmark: throughput into InfluxDB, zero loss, end-to-end latency; batched and not.

Starts its own influxd, mosquitto and `python -m gateway` (loopback, free ports, a temporary
folder it removes), then for batching on (the defaults) and off (GATEWAY_BATCH_SIZE=1, one
write per message):

  live      publish N readings QoS 1 as fast as one paho publisher can while the gateway
            runs: readings/s from the first publish to the last point in InfluxDB (on 2 cores
            the publisher competes with the gateway, mosquitto and influxd for CPU)
  backlog   the same N published while the gateway is down (its persistent session keeps
            them), then the gateway starts: the sustained rate into InfluxDB (10 % -> 90 %
            stored), the gateway's own throughput
            both end with a loss check (N points in InfluxDB, the sum of their values) and
            the CPU seconds each process used: readings per CPU-second of the gateway is its
            capacity on one free core, whatever else the machine is busy with
  latency   a steady rate (default 1,000/s) with ts = publish time: percentiles of
            ts -> InfluxDB accepted from the gateway's gateway_reading_delay_seconds
            histogram (linear within its buckets)

    .venv/bin/python scripts/bench_gateway.py                  # 200,000 batched, 20,000 unbatched
    .venv/bin/python scripts/bench_gateway.py --readings 50000 --unbatched-readings 5000
"""

from __future__ import annotations

import argparse
import os
import re
import sys
import tempfile
import time
import uuid
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path

import httpx
import paho.mqtt.client as mqtt

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from contracts.influx import InfluxSettings, make_client
from contracts.message import Reading, to_payload
from contracts.mqtt import MqttSettings
from contracts.mqtt import make_client as make_mqtt_client
from devstack.servers import (
    GatewayServer,
    InfluxServer,
    LocalServer,
    MosquittoServer,
    ensure_packages,
)

TOPIC = "bench/power"
# Paho numbers messages with 16-bit packet ids, queued ones included: keep well below 65535.
PUBLISH_WINDOW = 20_000
SOURCE = "bench"


@dataclass
class Throughput:
    readings: int
    publish_s: float
    stored_s: float  # from the start of the clock to the last point stored
    sustained: float  # readings/s between 10 % and 90 % stored (no start-up, no tail)
    stored: int
    value_sum_ok: bool
    cpu_s: dict[str, float]  # CPU seconds used by each process while the readings went in

    @property
    def lossless(self) -> bool:
        # Points are unique by time, so a duplicate cannot inflate the count: the count says
        # nothing is missing and the sum of the distinct values says nothing is altered.
        return self.stored == self.readings and self.value_sum_ok


class Bench:
    def __init__(self, workdir: Path, influx: InfluxServer, broker: MosquittoServer) -> None:
        self.workdir = workdir
        self.influx = influx
        self.broker = broker
        self.runs = 0

    def gateway(self, env: dict[str, str]) -> GatewayServer:
        """A fresh database and a gateway with its own session, started."""
        self.influx.query("DROP DATABASE home_energy")
        self.influx.query("CREATE DATABASE home_energy")
        self.runs += 1
        settings = {
            **self.influx.env(),
            **self.broker.env(),
            "MQTT_TOPIC": TOPIC,
            "MQTT_CLIENT_ID": f"bench-gateway-{self.runs}-{uuid.uuid4().hex[:6]}",
            "GATEWAY_LOG_LEVEL": "WARNING",
            **env,
        }
        return GatewayServer(self.workdir / f"gateway-{self.runs}", settings).start()

    def publisher(self) -> mqtt.Client:
        settings = MqttSettings.from_url(self.broker.url, topic=TOPIC, client_id="bench-pub")
        # No paho limit (0): with one, paho scans every pending message on each PUBACK.
        # publish_all keeps the window itself.
        client = make_mqtt_client(settings, max_inflight_messages=0)
        client.loop_start()
        deadline = time.monotonic() + 10
        while not client.is_connected() and time.monotonic() < deadline:
            time.sleep(0.05)
        if not client.is_connected():
            raise RuntimeError("the benchmark publisher could not connect")
        return client

    def throughput(self, env: dict[str, str], count: int, backlog: bool) -> Throughput:
        """Live: the gateway runs while readings are published; the clock starts at the
        first publish. Backlog: published while the gateway is down (the broker keeps them
        for its session), then the gateway starts; the clock starts with it."""
        payloads = [to_payload(r) for r in numbered_readings(count)]
        gateway = self.gateway(env)
        client = self.publisher()
        try:
            if backlog:
                gateway.stop()
            servers = {"gateway": gateway, "influxd": self.influx, "mosquitto": self.broker}
            started, cpu_before = time.monotonic(), cpu_seconds(servers)
            publish_all(client, payloads, timeout=300)
            publish_s = time.monotonic() - started
            if backlog:
                started = time.monotonic()
                gateway.start()  # returns once its API answers: imports are done
                cpu_before = cpu_seconds(servers)
            progress = self.wait_stored(count, timeout=max(120.0, count / 200))
            stored, done = progress[-1]
            cpu = {name: used - cpu_before[name] for name, used in cpu_seconds(servers).items()}
            value_sum_ok = self.value_sum() == count * (count - 1) / 2
            return Throughput(
                count,
                publish_s,
                done - started,
                sustained_rate(progress, count),
                stored,
                value_sum_ok,
                cpu,
            )
        finally:
            client.disconnect()
            client.loop_stop()
            gateway.stop()

    def latency(
        self, env: dict[str, str], rate: float, seconds: float
    ) -> dict[str, dict[str, float]]:
        gateway = self.gateway(env)
        try:
            client = self.publisher()
            count = int(rate * seconds)
            started = time.monotonic()
            infos = []
            last_ts = datetime.min.replace(tzinfo=UTC)
            for i in range(count):  # paced: reading i goes out at i / rate
                ahead = started + i / rate - time.monotonic()
                if ahead > 0:
                    time.sleep(ahead)
                # Two readings in one millisecond would be one point: keep each ts distinct.
                last_ts = max(datetime.now(UTC), last_ts + timedelta(milliseconds=1))
                reading = Reading(ts=last_ts, source=SOURCE, instant_power_w=1.0, seq=i)
                infos.append(client.publish(TOPIC, to_payload(reading), qos=1))
            wait_published(infos, time.monotonic() + 60)
            stored, _ = self.wait_stored(count, timeout=max(60.0, count / 200))[-1]
            if stored < count:
                print(f"latency run: only {stored} of {count} stored in time")
            client.disconnect()
            client.loop_stop()
            metrics = httpx.get(f"{gateway.url}/metrics").text
            return {
                "ts -> InfluxDB": percentiles(metrics, "gateway_reading_delay_seconds"),
                "InfluxDB write requests": percentiles(metrics, "gateway_write_latency_seconds"),
            }
        finally:
            gateway.stop()

    def count(self) -> int:
        result = self._query('SELECT count("instant_power_w") FROM "power"')
        return next((int(p["count"]) for p in result.get_points()), 0)

    def value_sum(self) -> float:
        result = self._query('SELECT sum("instant_power_w") FROM "power"')
        return next((float(p["sum"]) for p in result.get_points()), 0.0)

    def wait_stored(self, count: int, timeout: float) -> list[tuple[int, float]]:
        """(points stored, time.monotonic()) every ~50 ms until `count` or the timeout."""
        deadline = time.monotonic() + timeout
        progress = [(self.count(), time.monotonic())]
        while progress[-1][0] < count and time.monotonic() < deadline:
            time.sleep(0.05)
            progress.append((self.count(), time.monotonic()))
        return progress

    def _query(self, query: str):
        client = make_client(InfluxSettings(url=self.influx.url))
        return client.query(query)


def cpu_seconds(servers: dict[str, LocalServer]) -> dict[str, float]:
    """User + system CPU time of each server process so far (Linux /proc); 0 if not running."""
    used = {}
    for name, server in servers.items():
        try:
            stat = Path(f"/proc/{server.pid()}/stat").read_text()
        except OSError:
            used[name] = 0.0
            continue
        fields = stat.rsplit(")", 1)[1].split()
        used[name] = (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
    return used


def numbered_readings(count: int) -> list[Reading]:
    """Distinct timestamps (one point each) in the past hour; value i, so the sum checks."""
    base = datetime.now(UTC) - timedelta(hours=1) - timedelta(milliseconds=count)
    return [
        Reading(ts=base + timedelta(milliseconds=i), source=SOURCE, instant_power_w=float(i), seq=i)
        for i in range(count)
    ]


def sustained_rate(progress: list[tuple[int, float]], count: int) -> float:
    """Readings/s from the first sample at 10 % stored to the first at 90 %."""
    low = next((t for n, t in progress if n >= count * 0.1), None)
    high = next(((n, t) for n, t in progress if n >= count * 0.9), None)
    if low is None or high is None or high[1] <= low:
        return float("nan")
    start_count = next(n for n, t in progress if t == low)
    return (high[0] - start_count) / (high[1] - low)


def publish_all(client: mqtt.Client, payloads: list[bytes], timeout: float) -> None:
    """QoS 1 as fast as paho goes, at most PUBLISH_WINDOW unconfirmed (16-bit packet ids)."""
    deadline = time.monotonic() + timeout
    infos: list[mqtt.MQTTMessageInfo] = []
    for n, payload in enumerate(payloads):
        if n >= PUBLISH_WINDOW:
            wait_published(infos[n - PUBLISH_WINDOW : n - PUBLISH_WINDOW + 1], deadline)
        infos.append(client.publish(TOPIC, payload, qos=1))
    wait_published(infos, deadline)


def wait_published(infos: list[mqtt.MQTTMessageInfo], deadline: float) -> None:
    for info in infos:
        info.wait_for_publish(max(0.01, deadline - time.monotonic()))
        if not info.is_published():
            raise RuntimeError("the broker did not confirm every publish in time")


def percentiles(
    metrics_text: str, histogram: str, quantiles: tuple[float, ...] = (0.5, 0.9, 0.99)
) -> dict[str, float]:
    """Quantiles in ms from a Prometheus histogram, linear within a bucket, and the upper
    bound of the highest bucket that has anything in it ("max <=")."""
    bucket_line = re.compile(re.escape(histogram) + r'_bucket\{le="([^"]+)"\} (\d+)')
    buckets = [
        (float("inf") if le == "+Inf" else float(le), int(n))
        for le, n in bucket_line.findall(metrics_text)
    ]
    total = buckets[-1][1]
    result = {}
    for q in quantiles:
        rank = q * total
        lower_bound, lower_count = 0.0, 0
        for bound, cumulative in buckets:
            if cumulative >= rank:
                share = (rank - lower_count) / max(1, cumulative - lower_count)
                result[f"p{q * 100:g}"] = 1000 * (lower_bound + share * (bound - lower_bound))
                break
            lower_bound, lower_count = bound, cumulative
    result["max <="] = 1000 * next(bound for bound, cumulative in buckets if cumulative == total)
    return result


def report_throughput(kind: str, run: Throughput) -> None:
    rate = run.readings / run.stored_s
    if kind == "live":
        print(
            f"live:    {run.readings:,} published in {run.publish_s:.1f}s "
            f"({run.readings / run.publish_s:,.0f}/s), all in InfluxDB after {run.stored_s:.1f}s: "
            f"{rate:,.0f} readings/s end to end"
        )
    else:
        print(
            f"backlog: {run.readings:,} queued in the broker, all in InfluxDB {run.stored_s:.1f}s "
            f"after the gateway process started ({rate:,.0f}/s with start-up); "
            f"sustained {run.sustained:,.0f} readings/s into InfluxDB"
        )
    per_reading = ", ".join(f"{name} {cpu:.1f}" for name, cpu in run.cpu_s.items())
    print(
        f"         CPU seconds: {per_reading}; the gateway alone could take "
        f"{run.readings / run.cpu_s['gateway']:,.0f} readings per second of one core"
    )
    print(
        f"         loss check: {run.stored:,} of {run.readings:,} points, sum of values "
        f"{'matches' if run.value_sum_ok else 'DIFFERS'} -> "
        f"{'zero loss' if run.lossless else 'LOSS OR ALTERED VALUES'}"
    )


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--readings", type=int, default=200_000)
    parser.add_argument("--unbatched-readings", type=int, default=20_000)
    parser.add_argument("--rate", type=float, default=1000.0, help="latency run, readings/s")
    parser.add_argument("--seconds", type=float, default=10.0, help="latency run length")
    args = parser.parse_args()
    ensure_packages()
    with tempfile.TemporaryDirectory(prefix="bench-gateway-") as tmp:
        workdir = Path(tmp)
        with (
            InfluxServer(workdir / "influxd") as influx,
            MosquittoServer(workdir / "mosquitto") as broker,
        ):
            bench = Bench(workdir, influx, broker)
            runs = [
                ("batching on (defaults)", {}, args.readings),
                (
                    "batching off (GATEWAY_BATCH_SIZE=1)",
                    {"GATEWAY_BATCH_SIZE": "1"},
                    args.unbatched_readings,
                ),
            ]
            ok = True
            for title, env, count in runs:
                print(f"\n== {title}", flush=True)
                for kind in ("live", "backlog"):
                    run = bench.throughput(env, count, backlog=kind == "backlog")
                    report_throughput(kind, run)
                    ok = ok and run.lossless
                lat = bench.latency(env, args.rate, args.seconds)
                for what, figures in lat.items():
                    shown = ", ".join(f"{k} {v:.0f} ms" for k, v in figures.items())
                    print(f"latency at {args.rate:,.0f}/s, {what}: {shown}", flush=True)
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
