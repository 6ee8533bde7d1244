"""The reading message contract (design.md section 1): build, serialize and validate readings.

The edge builds `Reading`s and turns them into payloads with `to_payload`; the gateway turns
payloads back into readings with `parse_payload`, which never raises on input: every element
it cannot accept comes back as a `Rejected` with a reason a person can act on.
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta

from contracts.settings import Environment, SettingError

DEFAULT_TOPIC = "home/power"
DEFAULT_SOURCE = "meter1"
MEASUREMENT_FIELDS = ("instant_power_w", "energy_import_kwh", "energy_export_kwh")
CUMULATIVE_FIELDS = ("energy_import_kwh", "energy_export_kwh")
SOURCE_PATTERN = re.compile(r"[A-Za-z0-9_.-]{1,64}")
# A day of readings every 10 s is ~1.3 MB as one array; the edge's publisher sends a replay in
# arrays of at most its batch_size (500, ~50 kB), so a bigger payload is a publisher bug (or an
# attack), not data.
MAX_PAYLOAD_BYTES = 256 * 1024
# How far ahead of the gateway's clock a reading may be: NTP keeps both within a second,
# so anything beyond this is a wrong clock whose points would sort after all real ones.
MAX_FUTURE_SKEW = timedelta(minutes=5)
# A Raspberry Pi has no real-time clock: before NTP answers it believes it is 1970.
EARLIEST_TS = datetime(2000, 1, 1, tzinfo=UTC)

_RFC3339_UTC = re.compile(
    r"(\d{4})-(\d{2})-(\d{2})[Tt](\d{2}):(\d{2}):(\d{2})(?:\.(\d{1,3}))?([Zz]|[+-]\d{2}:\d{2})"
)


class InvalidReading(ValueError):
    """A reading (or a payload) that breaks the contract; the message is the reason."""


def source_setting(env: Environment) -> str:
    """`SOURCE_DEFAULT` (default meter1): the source of readings that name none."""
    source = env.text("SOURCE_DEFAULT", DEFAULT_SOURCE)
    if not SOURCE_PATTERN.fullmatch(source):
        raise SettingError(f"SOURCE_DEFAULT must match {SOURCE_PATTERN.pattern}, got {source!r}")
    return source


@dataclass(frozen=True)
class Reading:
    """One meter reading. `ts` is normalized to UTC and truncated to the millisecond."""

    ts: datetime
    source: str
    instant_power_w: float | None = None
    energy_import_kwh: float | None = None
    energy_export_kwh: float | None = None
    seq: int | None = None

    def __post_init__(self) -> None:
        if not isinstance(self.ts, datetime) or self.ts.utcoffset() is None:
            raise InvalidReading("ts must be a timezone-aware datetime")
        ts = self.ts.astimezone(UTC)
        object.__setattr__(self, "ts", ts.replace(microsecond=ts.microsecond // 1000 * 1000))
        if not isinstance(self.source, str) or not SOURCE_PATTERN.fullmatch(self.source):
            raise InvalidReading(
                f"source {_short(self.source)} does not match {SOURCE_PATTERN.pattern}"
            )
        present = 0
        for name in MEASUREMENT_FIELDS:
            value = getattr(self, name)
            if value is not None:
                value = _finite_float(name, value)
                if value < 0 and name in CUMULATIVE_FIELDS:
                    raise InvalidReading(
                        f"{name} is cumulative and cannot be negative, got {value}"
                    )
                object.__setattr__(self, name, value)
                present += 1
        if not present:
            raise InvalidReading(
                f"no measurement: need at least one of {', '.join(MEASUREMENT_FIELDS)}"
            )
        if self.seq is not None and (_is_not_int(self.seq) or self.seq < 0):
            raise InvalidReading(f"seq must be a non-negative integer, got {_short(self.seq)}")

    @property
    def measurements(self) -> dict[str, float]:
        """The measurement fields that are present (an absent field is NULL, never 0.0)."""
        return {name: v for name in MEASUREMENT_FIELDS if (v := getattr(self, name)) is not None}

    def to_json_obj(self) -> dict[str, object]:
        obj: dict[str, object] = {"ts": format_ts(self.ts), "source": self.source}
        obj |= self.measurements
        if self.seq is not None:
            obj["seq"] = self.seq
        return obj


def _is_not_int(value: object) -> bool:
    return isinstance(value, bool) or not isinstance(value, int)


def _finite_float(name: str, value: object) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise InvalidReading(f"{name} must be a number, got {_json_type(value)}")
    try:
        number = float(value)
    except OverflowError:
        raise InvalidReading(f"{name} is out of range") from None
    if not math.isfinite(number):
        raise InvalidReading(f"{name} must be finite, got {number}")
    return number


def _short(value: object, limit: int = 80) -> str:
    """repr() cut to `limit` characters: a reason must not carry a megabyte of input."""
    text = repr(value)
    return text if len(text) <= limit else text[: limit - 3] + "..."


def _json_type(value: object) -> str:
    names = {bool: "boolean", str: "string", dict: "object", list: "array", type(None): "null"}
    return names.get(type(value), type(value).__name__)


# --- serialization ---------------------------------------------------------------------


def format_ts(ts: datetime) -> str:
    """RFC 3339 in UTC with `Z` at millisecond precision, e.g. 2025-12-17T03:04:05.250Z."""
    return ts.astimezone(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def parse_ts(text: str) -> datetime:
    """An RFC 3339 timestamp with at most millisecond precision, as an aware UTC datetime."""
    match = _RFC3339_UTC.fullmatch(text)
    if not match:
        raise InvalidReading(
            f"ts {text[:40]!r} is not RFC 3339 with a UTC offset and at most milliseconds "
            '(e.g. "2025-12-17T03:04:05.250Z")'
        )
    iso = text.upper().replace("Z", "+00:00")
    try:
        local = datetime.fromisoformat(iso)
    except ValueError:
        raise InvalidReading(f"ts {text!r} is not a valid date and time") from None
    try:
        return local.astimezone(UTC)
    except OverflowError:  # e.g. 0001-01-01T00:00:00+23:59 is before year 1 in UTC
        raise InvalidReading(f"ts {text!r} is out of range in UTC (years 1 to 9999)") from None


def _encode(obj: object) -> bytes:
    return json.dumps(obj, separators=(",", ":"), allow_nan=False).encode()


def to_payload(readings: Reading | Sequence[Reading]) -> bytes:
    """One reading as a JSON object, or several as a JSON array."""
    if isinstance(readings, Reading):
        return _encode(readings.to_json_obj())
    return _encode([r.to_json_obj() for r in readings])


# --- validation ------------------------------------------------------------------------


@dataclass(frozen=True)
class Rejected:
    """Something `parse_payload` could not accept.

    `index` is the position in an array payload, None when the whole payload was rejected;
    `element` is the offending JSON element (None when the whole payload is the problem).
    """

    reason: str
    index: int | None = None
    element: object = None


@dataclass(frozen=True)
class ParsedPayload:
    readings: list[Reading] = field(default_factory=list)
    rejected: list[Rejected] = field(default_factory=list)


def source_topic(base_topic: str, source: str) -> str:
    """`<base_topic>/<source>`, where a publisher sends one source's readings."""
    return f"{base_topic.rstrip('/')}/{source}"


def source_from_topic(topic: str | None, base_topic: str = DEFAULT_TOPIC) -> str | None:
    """The `<source>` of `<base_topic>/<source>`; None for the base topic itself."""
    prefix = base_topic.rstrip("/") + "/"
    if not topic or not topic.startswith(prefix):
        return None
    suffix = topic[len(prefix) :]
    if not SOURCE_PATTERN.fullmatch(suffix):
        raise InvalidReading(
            f"topic {topic[:100]!r}: suffix is not a source name {SOURCE_PATTERN.pattern}"
        )
    return suffix


def parse_payload(
    payload: bytes | str,
    topic: str | None = None,
    *,
    base_topic: str = DEFAULT_TOPIC,
    fallback_source: str = DEFAULT_SOURCE,
    now: datetime | None = None,
    max_bytes: int = MAX_PAYLOAD_BYTES,
) -> ParsedPayload:
    """The good readings of a payload (object or array) and the rejected parts with reasons.

    The source of a reading is its `source` field, else the topic suffix, else
    `fallback_source` (the reader's `SOURCE_DEFAULT`). Never raises on bad input.
    """
    raw = payload.encode() if isinstance(payload, str) else payload
    if len(raw) > max_bytes:
        return _whole(f"payload is {len(raw)} bytes, more than the limit of {max_bytes}")
    try:
        document = json.loads(raw)
    except (ValueError, RecursionError) as exc:  # UnicodeDecodeError is a ValueError
        return _whole(f"not JSON: {str(exc)[:200]}")
    try:
        topic_source = source_from_topic(topic, base_topic)
    except InvalidReading as exc:
        return _whole(str(exc))
    source = topic_source or fallback_source
    now = now or datetime.now(UTC)

    if isinstance(document, list):
        if not document:
            return _whole("empty array: no readings")
        elements = list(enumerate(document))
    else:
        elements = [(None, document)]
    result = ParsedPayload()
    for index, element in elements:
        try:
            result.readings.append(_reading_from_json(element, source, topic_source, now))
        except InvalidReading as exc:
            where = f"element {index}: " if index is not None else ""
            result.rejected.append(Rejected(where + str(exc), index, element))
    return result


def _whole(reason: str) -> ParsedPayload:
    return ParsedPayload(rejected=[Rejected(reason)])


def _reading_from_json(
    element: object, source: str, topic_source: str | None, now: datetime
) -> Reading:
    if not isinstance(element, dict):
        raise InvalidReading(f"a reading must be a JSON object, got {_json_type(element)}")
    if element.get("ts") is None:
        raise InvalidReading("missing ts")
    if not isinstance(element["ts"], str):
        raise InvalidReading(f"ts must be a string, got {_json_type(element['ts'])}")
    ts = parse_ts(element["ts"])
    if ts > now + MAX_FUTURE_SKEW:
        raise InvalidReading(f"ts {format_ts(ts)} is in the future (gateway time {format_ts(now)})")
    if ts < EARLIEST_TS:
        raise InvalidReading(f"ts {format_ts(ts)} is before {EARLIEST_TS.year}: clock not set?")
    claimed = element.get("source")
    if claimed is not None:
        if not isinstance(claimed, str) or not SOURCE_PATTERN.fullmatch(claimed):
            raise InvalidReading(
                f"source {_short(claimed)} does not match {SOURCE_PATTERN.pattern}"
            )
        if topic_source and claimed != topic_source:
            raise InvalidReading(f"source {claimed!r} differs from the topic's {topic_source!r}")
        source = claimed
    values = {name: element.get(name) for name in MEASUREMENT_FIELDS}
    return Reading(ts=ts, source=source, seq=element.get("seq"), **values)
