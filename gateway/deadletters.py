"""Dead letters: what the gateway could not store, one JSON object a line, in a rotating file.

A line holds the time, the topic, the reason and the payload as it arrived (cut to
PAYLOAD_KEEP_BYTES, with its full size and SHA-256), so a person can see what went wrong and
replay it. For an array, the first REJECTED_KEEP refused elements with their reasons and the
count of all of them. So a line is bounded whatever arrives: at most PAYLOAD_KEEP_BYTES of
payload (up to 6x that once JSON escapes control bytes), and a few kilobytes besides.
"""

from __future__ import annotations

import hashlib
import json
import os
import threading
from collections.abc import Sequence
from datetime import UTC, datetime
from pathlib import Path

from contracts.message import Rejected, format_ts

# A 1 MB garbage payload should not push a day of real dead letters out of the rotation.
PAYLOAD_KEEP_BYTES = 64 * 1024
# An array of 130,000 bad elements would otherwise be 130,000 reasons (11 MB for 256 KiB of
# zeros): the first few show what is wrong, the count says how much.
REJECTED_KEEP = 20
REASON_KEEP_CHARS = 1000


class DeadLetters:
    def __init__(self, path: Path, max_bytes: int, backups: int) -> None:
        self.path = Path(path)
        self.max_bytes = max_bytes
        self.backups = backups
        self.count = 0
        self._lock = threading.Lock()
        self._unsynced = False
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._file = self.path.open("ab")

    def add(
        self, topic: str, payload: bytes, reason: str, rejected: Sequence[Rejected] = ()
    ) -> None:
        """One line for one message; `rejected` are the refused elements of an array."""
        record: dict[str, object] = {
            "time": format_ts(datetime.now(UTC)),
            "topic": topic,
            "reason": _cut(reason),
        }
        if rejected:
            record["rejected_count"] = len(rejected)
            record["rejected"] = [
                {"index": r.index, "reason": _cut(r.reason)} for r in rejected[:REJECTED_KEEP]
            ]
        record |= {
            "payload_bytes": len(payload),
            "payload_sha256": hashlib.sha256(payload).hexdigest(),
            "payload": payload[:PAYLOAD_KEEP_BYTES].decode("utf-8", errors="backslashreplace"),
        }
        line = json.dumps(record, ensure_ascii=False, default=repr).encode() + b"\n"
        with self._lock:
            if self._file.tell() + len(line) > self.max_bytes and self._file.tell() > 0:
                self._rotate()
            self._file.write(line)
            self._file.flush()
            self.count += 1
            self._unsynced = True

    def sync(self) -> None:
        """Make the dead letters durable: called before the messages they came from are acked."""
        with self._lock:
            if self._unsynced:
                os.fsync(self._file.fileno())
                self._unsynced = False

    def close(self) -> None:
        with self._lock:
            self._file.close()

    def _rotate(self) -> None:
        os.fsync(self._file.fileno())
        self._file.close()
        for n in range(self.backups - 1, 0, -1):
            older = self.path.with_name(f"{self.path.name}.{n}")
            if older.exists():
                older.replace(self.path.with_name(f"{self.path.name}.{n + 1}"))
        self.path.replace(self.path.with_name(f"{self.path.name}.1"))
        self._file = self.path.open("ab")


def _cut(reason: str) -> str:
    return reason if len(reason) <= REASON_KEEP_CHARS else reason[: REASON_KEEP_CHARS - 3] + "..."
