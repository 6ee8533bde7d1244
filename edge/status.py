"""`python -m edge status`: what the edge has done, read from its outbox alone.

Needs no serial port and no broker, so it works while the service runs or is stopped:
outbox depth, the oldest reading not yet delivered, the last successful read, the last
half-hour register published from the meter's memory, the module's link quality, lines the
driver could not parse, and whether the broker is refusing publishes (MQTT 5 reason code).
"""

from __future__ import annotations

import json
import sys
from datetime import UTC, datetime

from contracts.message import format_ts, parse_ts
from contracts.settings import Environment
from edge.app import LAST_READ_KEY, LINK_KEY, UNPARSED_KEY, outbox_path
from edge.outbox import Outbox
from edge.publisher import DELIVERY_KEY, REFUSAL_KEY
from edge.recovery import RECOVERED_KEY


def ago(text: str | None, now: datetime) -> str:
    if text is None:
        return "never"
    seconds = int((now - parse_ts(text)).total_seconds())
    hours, rest = divmod(abs(seconds), 3600)
    span = f"{hours} h {rest // 60} min" if hours else f"{rest // 60} min {rest % 60} s"
    return f"{text} ({span} {'ago' if seconds >= 0 else 'ahead'})"


def link_quality(text: str | None) -> str:
    link = json.loads(text or "{}")
    if link.get("lqi") is None:
        return "unknown (no session yet)"
    shown = f"LQI {link['lqi']} (about {link['rssi_from_lqi_dbm']} dBm)"
    if link.get("rssi_dbm") is not None:
        shown += f", last packet RSSI {link['rssi_dbm']} dBm"
    return shown


def broker_state(outbox: Outbox, now: datetime) -> str:
    refusal = json.loads(outbox.state(REFUSAL_KEY) or "null")
    if refusal:
        return (
            f"REFUSING publishes since {refusal['since']}: {refusal['reason']} "
            f"(0x{refusal['code']:02X}), {refusal['refused']} messages refused"
        )
    return f"accepting (last delivery {ago(outbox.state(DELIVERY_KEY), now)})"


def status_lines(outbox: Outbox, now: datetime) -> list[str]:
    oldest = outbox.oldest(1)
    unparsed = json.loads(outbox.state(UNPARSED_KEY) or "{}")
    rows = [
        ("outbox", str(outbox.path)),
        ("pending", f"{outbox.pending():,} readings ({outbox.evicted():,} ever evicted)"),
        ("oldest unsent", ago(format_ts(oldest[0].ts), now) if oldest else "none"),
        ("last read", ago(outbox.state(LAST_READ_KEY), now)),
        ("last half-hour", ago(outbox.state(RECOVERED_KEY), now)),
        ("link quality", link_quality(outbox.state(LINK_KEY))),
        ("unparsed lines", ", ".join(f"{k} {v}" for k, v in unparsed.items()) or "none"),
        ("broker", broker_state(outbox, now)),
    ]
    return [f"{name:<15} {value}" for name, value in rows]


def main() -> int:
    path = outbox_path(Environment())
    if not path.exists():
        print(f"edge status: no outbox at {path} (set EDGE_OUTBOX_PATH)", file=sys.stderr)
        return 2
    with Outbox(path) as outbox:
        print("\n".join(status_lines(outbox, datetime.now(UTC))))
    return 0
