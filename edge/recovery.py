"""The meter's own memory: half-hour registers the edge has not published, read back.

A low-voltage smart meter keeps its cumulative counters at every half-hour boundary for 45
days or more. After any downtime the edge reads back every boundary after its watermark (the
newest one published, kept in the outbox's state in the same commit as the readings), oldest
first: with 0xED/0xEC (up to 12 points in one answer) when the meter lists them in its 0x9F
property map and the gap is that short, else a day at a time with 0xE5 (day to read) and
0xE2/0xE4 (48 registers each). A token bucket bounds the read-back's requests per minute so
live polling goes on. The meter's 0xEA/0xEB push on every half hour extends the watermark
when it is the next boundary; anything else is left to the read-back.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta
from zoneinfo import ZoneInfo

from contracts.message import Reading
from edge import echonet as el
from edge.meter import Meter
from edge.skstack import Driver

log = logging.getLogger(__name__)

RECOVERED_KEY = "recovered_upto"  # outbox state: the newest half-hour boundary published
HALF_HOUR = timedelta(minutes=30)
BURST_REQUESTS = 3.0  # a step is at most two requests, the property map one
PAUSE_AFTER_REFUSAL_S = 300.0  # the meter refused or garbled a read-back: try again later


@dataclass(frozen=True)
class RecoverySettings:
    max_days: int = 45  # how far back a first start or a long downtime reads
    requests_per_minute: float = 6.0  # the read-back's share of the meter's attention
    settle_s: float = 60.0  # a boundary is read back this long after it passed (if no push)
    meter_tz: ZoneInfo = field(default_factory=lambda: ZoneInfo("Asia/Tokyo"))

    def __post_init__(self) -> None:
        if not 0 <= self.max_days <= el.HISTORY_DAYS_MAX:
            days_max = el.HISTORY_DAYS_MAX
            raise ValueError(f"EDGE_RECOVERY_DAYS must be 0..{days_max}, got {self.max_days}")
        if self.requests_per_minute <= 0:
            rate = self.requests_per_minute
            raise ValueError(f"EDGE_RECOVERY_REQUESTS_PER_MINUTE must be positive, got {rate}")


def floor_half_hour(ts: datetime) -> datetime:
    return ts.replace(minute=ts.minute // 30 * 30, second=0, microsecond=0)


@dataclass
class Recovery:
    driver: Driver
    meter: Meter
    settings: RecoverySettings = field(default_factory=RecoverySettings)
    watermark: datetime | None = None  # UTC
    clock: Callable[[], float] = time.monotonic
    now: Callable[[], datetime] = lambda: datetime.now(UTC)

    def __post_init__(self) -> None:
        self._tokens = BURST_REQUESTS
        self._refilled = self.clock()
        self._paused_until = float("-inf")
        self.property_map: frozenset[int] | None = None
        self.meter_today: date | None = None

    # What is owed and when ----------------------------------------------------------

    def first_missing(self) -> datetime:
        if self.watermark is not None:
            return self.watermark + HALF_HOUR
        oldest = self.now() - timedelta(days=self.settings.max_days)
        return floor_half_hour(oldest.astimezone(UTC)) + HALF_HOUR

    def due(self) -> bool:
        """Is a half hour owed, and may the read-back send its next requests now?"""
        now = self.clock()
        rate = self.settings.requests_per_minute / 60
        self._tokens = min(BURST_REQUESTS, self._tokens + (now - self._refilled) * rate)
        self._refilled = now
        settled = self.now() - timedelta(seconds=self.settings.settle_s)
        owed = self.first_missing() <= settled
        return owed and self._tokens >= 2 and now >= self._paused_until

    def session_started(self) -> None:
        """A new session may be a new meter: read its property map again."""
        self.property_map = None

    # One step -----------------------------------------------------------------------

    def step(self) -> tuple[list[Reading], datetime | None]:
        """One read-back (at most two requests): readings, and the new watermark or None.

        A refusal or a malformed register pauses the read-back (the session and the live
        polls go on); a lost session or an unanswered request is the caller's, as for a poll.
        """
        before = self.driver.requests
        try:
            return self._step()
        except el.EchonetError as exc:
            log.warning("meter memory: %s; reading back again in %.0fs", exc, PAUSE_AFTER_REFUSAL_S)
            self._paused_until = self.clock() + PAUSE_AFTER_REFUSAL_S
            return [], None
        finally:
            self._tokens -= self.driver.requests - before

    def _step(self) -> tuple[list[Reading], datetime | None]:
        if self.property_map is None:
            self.property_map = self._read_property_map()
            return [], None
        first = self.first_missing()
        newest = floor_half_hour(self.now().astimezone(UTC))
        slots = int((newest - first) / HALF_HOUR) + 1
        history2 = {el.EPC_HISTORY2, el.EPC_HISTORY2_TIME} <= self.property_map
        if history2 and slots <= el.HISTORY2_POINTS_MAX:
            return self._read_points(newest, slots)
        return self._read_day(first)

    def _read_property_map(self) -> frozenset[int]:
        edt = self.driver.get((el.EPC_GET_MAP,)).values().get(el.EPC_GET_MAP)
        epcs = el.decode_property_map(edt) if edt else frozenset()
        log.info(
            "meter memory: 0xE2/0xE5 day reads%s",
            " and 0xEC/0xED points" if {el.EPC_HISTORY2, el.EPC_HISTORY2_TIME} <= epcs else "",
        )
        return epcs

    def _local(self, ts: datetime) -> datetime:
        return ts.astimezone(self.settings.meter_tz).replace(tzinfo=None)

    def _utc(self, local: datetime) -> datetime:
        return local.replace(tzinfo=self.settings.meter_tz).astimezone(UTC)

    def _set(self, epc: int, edt: bytes) -> None:
        answer = self.driver.set(((epc, edt),))
        if answer.esv != el.SET_RES:
            raise el.EchonetError(f"the meter refused to set 0x{epc:02X} to {edt.hex()}")

    def _read_day(self, first: datetime) -> tuple[list[Reading], datetime | None]:
        day = self._local(first).date()
        today = self.meter_today or self._local(self.now()).date()
        offset = (today - day).days
        if offset > min(self.settings.max_days, el.HISTORY_DAYS_MAX):
            return self._skip_to(today - timedelta(days=self.settings.max_days))
        offset = max(offset, 0)
        self._set(el.EPC_HISTORY_DAY, bytes((offset,)))
        epcs = (el.EPC_HISTORY_NORMAL, el.EPC_CURRENT_DATE)
        if "energy_export_kwh" in self.meter.fields:
            epcs += (el.EPC_HISTORY_REVERSE,)
        values = self.driver.get(epcs).values()
        if el.EPC_HISTORY_NORMAL not in values or el.EPC_CURRENT_DATE not in values:
            raise el.EchonetError("the meter answered without its 0xE2 register or 0x98 date")
        got_offset, normal = el.decode_history(values[el.EPC_HISTORY_NORMAL])
        self.meter_today = el.decode_current_date(values[el.EPC_CURRENT_DATE])
        reverse = (
            el.decode_history(values[el.EPC_HISTORY_REVERSE])[1]
            if el.EPC_HISTORY_REVERSE in values
            else [None] * el.SLOTS_PER_DAY
        )
        if self.meter_today - timedelta(days=got_offset) != day:
            log.info("meter memory: the meter's day moved on; reading %s again", day)
            return [], None
        midnight = datetime.combine(day, datetime.min.time())
        points = [
            (self._utc(midnight + i * HALF_HOUR), normal[i], reverse[i])
            for i in range(el.SLOTS_PER_DAY)
        ]
        readings, newest = self._readings(points)
        if got_offset > 0:  # a past day is done, whatever it lacked
            newest = self._utc(midnight + (el.SLOTS_PER_DAY - 1) * HALF_HOUR)
        return readings, newest

    def _read_points(self, newest: datetime, count: int) -> tuple[list[Reading], datetime | None]:
        self._set(el.EPC_HISTORY2_TIME, el.encode_history2_time(self._local(newest), count))
        edt = self.driver.get((el.EPC_HISTORY2,)).values().get(el.EPC_HISTORY2)
        if not edt:
            raise el.EchonetError("the meter answered without its 0xEC registers")
        got_newest, pairs = el.decode_history2(edt)
        points = [
            (self._utc(got_newest - i * HALF_HOUR), normal, reverse)
            for i, (normal, reverse) in enumerate(pairs)
        ]
        return self._readings(sorted(points, key=lambda p: p[0]))

    def _readings(
        self, points: list[tuple[datetime, int | None, int | None]]
    ) -> tuple[list[Reading], datetime | None]:
        """Readings for the points after the watermark, oldest first; the newest with data."""
        readings: list[Reading] = []
        newest: datetime | None = None
        for ts, normal, reverse in points:
            if self.watermark is not None and ts <= self.watermark:
                continue
            reading = self.meter.register_reading(ts, normal, reverse)
            if reading is not None:
                readings.append(reading)
                newest = ts
        return readings, newest

    def _skip_to(self, oldest_day: date) -> tuple[list[Reading], datetime | None]:
        watermark = self._utc(datetime.combine(oldest_day, datetime.min.time())) - HALF_HOUR
        skipped = int((watermark - (self.first_missing() - HALF_HOUR)) / HALF_HOUR)
        log.warning(
            "meter memory: %d half hours are older than the meter keeps (%d days); lost",
            skipped,
            self.settings.max_days,
        )
        return [], watermark

    # Pushes -------------------------------------------------------------------------

    def pushed(self, frame: el.Frame) -> tuple[list[Reading], datetime | None]:
        """The 0xEA/0xEB INF of a half hour: a reading when it is the next boundary owed."""
        values = frame.values()
        normal_edt = values.get(el.EPC_FIXED_TIME_NORMAL)
        reverse_edt = values.get(el.EPC_FIXED_TIME_REVERSE)
        when, normal = el.decode_fixed_time(normal_edt) if normal_edt else (None, None)
        when_rev, reverse = el.decode_fixed_time(reverse_edt) if reverse_edt else (None, None)
        boundary = when or when_rev
        if boundary is None:
            return [], None
        ts = self._utc(boundary)
        if ts != self.first_missing():
            return [], None  # older: published already; newer: the read-back owes more first
        reading = self.meter.register_reading(ts, normal, reverse)
        return ([reading], ts) if reading else ([], None)
