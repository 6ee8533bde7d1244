"""The durable outbox: every reading is committed to SQLite before anything tries to send it.

One row per reading; its `seq` (AUTOINCREMENT, never reused) is the reading's `seq` in the
message, so a gap downstream is a loss that can be counted. Rows leave the outbox only when
the broker acknowledged them, or when the size bound evicts the oldest (counted in `meta`).
WAL lets the meter loop write while the publisher reads and deletes from its own connection;
synchronous=FULL makes a commit survive a power cut, not only a kill -9 (a Pi has no UPS).
"""

from __future__ import annotations

import logging
import sqlite3
from collections.abc import Iterable
from pathlib import Path

from contracts.message import Reading, format_ts, parse_ts

log = logging.getLogger(__name__)

DEFAULT_MAX_READINGS = 1_000_000  # ~11 days at 1 Hz, ~100 MB on the SD card

_SCHEMA = """
CREATE TABLE IF NOT EXISTS outbox (
    seq INTEGER PRIMARY KEY AUTOINCREMENT,
    ts TEXT NOT NULL,
    source TEXT NOT NULL,
    instant_power_w REAL,
    energy_import_kwh REAL,
    energy_export_kwh REAL
);
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value INTEGER NOT NULL);
INSERT OR IGNORE INTO meta VALUES ('pending', 0), ('evicted', 0);
-- The pending count is kept by triggers so that any connection's insert or delete keeps it
-- exact without a count(*) over a million rows on every reading.
CREATE TRIGGER IF NOT EXISTS outbox_added AFTER INSERT ON outbox
    BEGIN UPDATE meta SET value = value + 1 WHERE key = 'pending'; END;
CREATE TRIGGER IF NOT EXISTS outbox_removed AFTER DELETE ON outbox
    BEGIN UPDATE meta SET value = value - 1 WHERE key = 'pending'; END;
CREATE TABLE IF NOT EXISTS state (key TEXT PRIMARY KEY, value TEXT NOT NULL);
"""
_COLUMNS = "seq, ts, source, instant_power_w, energy_import_kwh, energy_export_kwh"


class Outbox:
    def __init__(self, path: Path | str, max_readings: int = DEFAULT_MAX_READINGS) -> None:
        if max_readings < 1:
            raise ValueError(f"outbox bound must be at least 1 reading, got {max_readings}")
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self.max_readings = max_readings
        # Autocommit mode; each method opens its own transaction. The publisher thread and
        # the meter loop use separate Outbox objects, so a connection is never shared.
        self._db = sqlite3.connect(self.path, isolation_level=None, timeout=30)
        self._db.execute("PRAGMA journal_mode=WAL")
        self._db.execute("PRAGMA synchronous=FULL")
        self._db.executescript(_SCHEMA)

    def close(self) -> None:
        self._db.close()

    def __enter__(self) -> Outbox:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def add(self, reading: Reading, state: dict[str, str] | None = None) -> int:
        """Store one reading (and the meter state that produced it) in one commit; its seq."""
        return self.add_many([reading], state)[-1]

    def add_many(
        self, readings: Iterable[Reading], state: dict[str, str] | None = None
    ) -> list[int]:
        rows = [
            (format_ts(r.ts), r.source, r.instant_power_w, r.energy_import_kwh, r.energy_export_kwh)
            for r in readings
        ]
        with self._transaction():
            seqs = [
                self._db.execute(
                    "INSERT INTO outbox (ts, source, instant_power_w, energy_import_kwh, "
                    "energy_export_kwh) VALUES (?, ?, ?, ?, ?) RETURNING seq",
                    row,
                ).fetchone()[0]
                for row in rows
            ]
            self._db.executemany(
                "INSERT OR REPLACE INTO state VALUES (?, ?)", (state or {}).items()
            )
            self._evict_beyond_bound()
        return seqs

    def _evict_beyond_bound(self) -> None:
        excess = self.pending() - self.max_readings
        if excess <= 0:
            return
        self._db.execute(
            "DELETE FROM outbox WHERE seq IN (SELECT seq FROM outbox ORDER BY seq LIMIT ?)",
            (excess,),
        )
        self._db.execute("UPDATE meta SET value = value + ? WHERE key = 'evicted'", (excess,))
        log.warning(
            "outbox full (%d readings): evicted the %d oldest, %d evicted in total",
            self.max_readings,
            excess,
            self.evicted(),
        )

    def oldest(self, limit: int, after_seq: int = 0) -> list[Reading]:
        """Up to `limit` readings with seq > after_seq, oldest first, each with its seq."""
        rows = self._db.execute(
            f"SELECT {_COLUMNS} FROM outbox WHERE seq > ? ORDER BY seq LIMIT ?",
            (after_seq, limit),
        ).fetchall()
        return [
            Reading(
                ts=parse_ts(ts),
                source=source,
                instant_power_w=power,
                energy_import_kwh=imported,
                energy_export_kwh=exported,
                seq=seq,
            )
            for seq, ts, source, power, imported, exported in rows
        ]

    def delete(self, seqs: Iterable[int]) -> int:
        """Remove acknowledged readings; how many were still there."""
        with self._transaction():
            cursor = self._db.executemany("DELETE FROM outbox WHERE seq = ?", ((s,) for s in seqs))
        return cursor.rowcount

    def pending(self) -> int:
        return self._meta("pending")

    def evicted(self) -> int:
        return self._meta("evicted")

    def set_state(self, values: dict[str, str | None]) -> None:
        """Store (or, for None, remove) state values in one commit: what `python -m edge status`
        and a restart read back."""
        with self._transaction():
            for key, value in values.items():
                if value is None:
                    self._db.execute("DELETE FROM state WHERE key = ?", (key,))
                else:
                    self._db.execute("INSERT OR REPLACE INTO state VALUES (?, ?)", (key, value))

    def state(self, key: str) -> str | None:
        row = self._db.execute("SELECT value FROM state WHERE key = ?", (key,)).fetchone()
        return row[0] if row else None

    def _meta(self, key: str) -> int:
        return self._db.execute("SELECT value FROM meta WHERE key = ?", (key,)).fetchone()[0]

    def _transaction(self) -> _Transaction:
        return _Transaction(self._db)


class _Transaction:
    """BEGIN IMMEDIATE ... COMMIT, or ROLLBACK on an exception (autocommit connections)."""

    def __init__(self, db: sqlite3.Connection) -> None:
        self._db = db

    def __enter__(self) -> None:
        self._db.execute("BEGIN IMMEDIATE")

    def __exit__(self, exc_type: type[BaseException] | None, *exc: object) -> None:
        self._db.execute("COMMIT" if exc_type is None else "ROLLBACK")
