"""Dead letters: what the gateway could not store, one JSON object a line, in a rotating file.

A line holds the time, the topic, the reason and the payload as it arrived (cut to
PAYLOAD_KEEP_BYTES, with its full size), so a person can see what went wrong and replay it.
"""

from __future__ import annotations

import json
import os
import threading
from datetime import UTC, datetime
from pathlib import Path

from contracts.message import format_ts

# A 1 MB garbage payload should not push a day of real dead letters out of the rotation.
PAYLOAD_KEEP_BYTES = 64 * 1024


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

    def add(self, topic: str, payload: bytes, reason: str, **details: object) -> None:
        record = {
            "time": format_ts(datetime.now(UTC)),
            "topic": topic,
            "reason": reason,
            **details,
            "payload_bytes": len(payload),
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
