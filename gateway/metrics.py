"""Counters and histograms rendered in the Prometheus text format (no client library needed)."""

from __future__ import annotations

import bisect
import threading
from collections.abc import Callable, Sequence

LATENCY_BUCKETS_S = (0.001, 0.002, 0.005, 0.01, 0.02, 0.05, 0.1, 0.2, 0.5, 1, 2, 5, 10, 30, 60)


def _header(name: str, help_text: str, kind: str) -> list[str]:
    return [f"# HELP {name} {help_text}", f"# TYPE {name} {kind}"]


class Counter:
    def __init__(self, name: str, help_text: str) -> None:
        self.name, self.help_text = name, help_text
        self.value = 0.0
        self._lock = threading.Lock()

    def inc(self, amount: float = 1) -> None:
        with self._lock:
            self.value += amount

    def render(self) -> list[str]:
        return [*_header(self.name, self.help_text, "counter"), f"{self.name} {self.value:g}"]


class Gauge:
    """A value read at scrape time from the thing it describes."""

    def __init__(self, name: str, help_text: str, read: Callable[[], float]) -> None:
        self.name, self.help_text, self.read = name, help_text, read

    def render(self) -> list[str]:
        return [*_header(self.name, self.help_text, "gauge"), f"{self.name} {self.read():g}"]


class Histogram:
    def __init__(
        self, name: str, help_text: str, buckets: Sequence[float] = LATENCY_BUCKETS_S
    ) -> None:
        self.name, self.help_text = name, help_text
        self.bounds = tuple(buckets)
        self.counts = [0] * (len(self.bounds) + 1)  # the last one is +Inf
        self.total = 0.0
        self._lock = threading.Lock()

    def observe(self, value: float, times: int = 1) -> None:
        with self._lock:
            self.counts[bisect.bisect_left(self.bounds, value)] += times
            self.total += value * times

    def render(self) -> list[str]:
        with self._lock:
            counts, total = list(self.counts), self.total
        lines = _header(self.name, self.help_text, "histogram")
        cumulative = 0
        for bound, count in zip([*self.bounds, "+Inf"], counts, strict=True):
            cumulative += count
            lines.append(f'{self.name}_bucket{{le="{bound}"}} {cumulative}')
        lines += [f"{self.name}_sum {total:g}", f"{self.name}_count {cumulative}"]
        return lines


class GatewayMetrics:
    def __init__(self) -> None:
        self.messages_received = Counter(
            "gateway_messages_received_total", "MQTT messages received."
        )
        self.readings_received = Counter(
            "gateway_readings_received_total", "Valid readings received."
        )
        self.readings_written = Counter(
            "gateway_readings_written_total", "Readings InfluxDB accepted."
        )
        self.readings_rejected = Counter(
            "gateway_readings_rejected_total",
            "Messages or array elements refused (by validation or by InfluxDB).",
        )
        self.deadletters = Counter(
            "gateway_deadletters_total", "Lines written to the dead letters."
        )
        self.batches = Counter("gateway_batches_total", "Batches written to InfluxDB.")
        self.write_errors = Counter(
            "gateway_write_errors_total", "Failed InfluxDB write requests (outage or refusal)."
        )
        self.write_latency = Histogram(
            "gateway_write_latency_seconds", "Duration of one InfluxDB write request."
        )
        self.reading_delay = Histogram(
            "gateway_reading_delay_seconds",
            "From a reading's ts to InfluxDB accepting it (end-to-end latency).",
        )
        self.logins = Counter("gateway_logins_total", "People signed in on the page's form.")
        self.login_failures = Counter(
            "gateway_login_failures_total", "Sign-in attempts with a wrong password."
        )
        self.gauges: list[Gauge] = []

    def add_gauge(self, name: str, help_text: str, read: Callable[[], float]) -> None:
        self.gauges.append(Gauge(name, help_text, read))

    def render(self) -> str:
        metrics = [v for v in vars(self).values() if isinstance(v, Counter | Histogram)]
        lines = [line for metric in [*metrics, *self.gauges] for line in metric.render()]
        return "\n".join(lines) + "\n"
