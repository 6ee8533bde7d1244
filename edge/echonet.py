"""ECHONET Lite frames for the low-voltage smart meter (class 0x0288), as pure functions.

A frame (format 1, EHD 0x1081) is: EHD(2) TID(2) SEOJ(3) DEOJ(3) ESV(1) OPC(1), then OPC
properties of EPC(1) PDC(1) EDT(PDC). Integers are big-endian. Nothing here does I/O: the
driver sends the bytes `get_request` builds and hands what comes back to `decode_frame`.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass
from datetime import date, datetime
from decimal import Decimal

EHD = 0x1081
UDP_PORT = 0x0E1A  # 3610, where every ECHONET Lite node listens
CONTROLLER = 0x05FF01  # SEOJ: controller class, instance 1 (the HEMS side)
SMART_METER = 0x028801  # DEOJ: low-voltage smart electric energy meter, instance 1
NODE_PROFILE = 0x0EF001  # source of the instance-list notification a meter sends on join

# Service codes (ESV)
SETC = 0x61  # Set with a response
SET_RES = 0x71
SETC_SNA = 0x51
GET = 0x62
GET_RES = 0x72
GET_SNA = 0x52  # "service not available": the meter answered but without some values
INF = 0x73
INFC = 0x74
ANSWERS = frozenset({GET_RES, GET_SNA, SET_RES, SETC_SNA})  # to one of our requests

# Properties of class 0x0288
EPC_COEFFICIENT = 0xD3
EPC_DIGITS = 0xD7
EPC_ENERGY_NORMAL = 0xE0
EPC_UNIT = 0xE1
EPC_ENERGY_REVERSE = 0xE3
EPC_INSTANT_POWER = 0xE7
EPC_FIXED_TIME_NORMAL = 0xEA  # every 30 minutes: date-time + cumulative, normal direction
EPC_FIXED_TIME_REVERSE = 0xEB
# The meter's memory: a cumulative register at every half-hour boundary for 45+ days.
EPC_HISTORY_DAY = 0xE5  # Set: which day 0xE2/0xE4 give (0 = today, 1 = yesterday, .. 99)
EPC_HISTORY_NORMAL = 0xE2  # day (2 bytes) + 48 counters at 00:00, 00:30 .. 23:30 of that day
EPC_HISTORY_REVERSE = 0xE4
EPC_HISTORY2_TIME = 0xED  # Set: newest time point (YYYY MM DD hh mm) + number of points (1..12)
EPC_HISTORY2 = 0xEC  # that time, the count, then (normal, reverse) pairs, newest first
# Super-class properties every ECHONET object has
EPC_CURRENT_TIME = 0x97  # hh mm
EPC_CURRENT_DATE = 0x98  # YYYY(2) MM DD
EPC_GET_MAP = 0x9F  # the properties the meter answers a Get for
SLOTS_PER_DAY = 48
HISTORY_DAYS_MAX = 99  # 0xE5's range
HISTORY2_POINTS_MAX = 12

# 0xE1: coded unit of the cumulative counters, in kWh. Decimal so 12345 x 0.1 is 1234.5.
UNITS_KWH: dict[int, Decimal] = {
    0x00: Decimal("1"),
    0x01: Decimal("0.1"),
    0x02: Decimal("0.01"),
    0x03: Decimal("0.001"),
    0x04: Decimal("0.0001"),
    0x0A: Decimal("10"),
    0x0B: Decimal("100"),
    0x0C: Decimal("1000"),
    0x0D: Decimal("10000"),
}

# Ranges the specification allows; anything outside is a no-data/overflow/underflow code
# (0x7FFFFFFE no data, 0x7FFFFFFF overflow, 0x80000000 underflow for E7; 0xFFFFFFFE and
# 0xFFFFFFFF for the unsigned counters).
INSTANT_POWER_RANGE = (-0x7FFFFFFF, 0x7FFFFFFD)
CUMULATIVE_MAX = 99_999_999
COEFFICIENT_MAX = 999_999
DIGITS_RANGE = (1, 8)
NO_DATA_UNSIGNED = 0xFFFFFFFE

_HEADER = struct.Struct(">HH3s3sBB")


class EchonetError(ValueError):
    """Bytes that are not a well-formed ECHONET Lite format-1 frame, or a bad property value."""


@dataclass(frozen=True)
class Frame:
    tid: int
    seoj: int
    deoj: int
    esv: int
    properties: tuple[tuple[int, bytes], ...]  # (EPC, EDT); a Get request has empty EDTs

    def values(self) -> dict[int, bytes]:
        """EPC -> EDT for the properties that carry data (Get_SNA leaves the missing ones empty)."""
        return {epc: edt for epc, edt in self.properties if edt}


def encode_frame(frame: Frame) -> bytes:
    if not 0 <= frame.tid <= 0xFFFF:
        raise EchonetError(f"TID {frame.tid} does not fit in 2 bytes")
    if len(frame.properties) > 0xFF:
        raise EchonetError("more than 255 properties in one frame")
    out = bytearray(
        _HEADER.pack(
            EHD,
            frame.tid,
            frame.seoj.to_bytes(3, "big"),
            frame.deoj.to_bytes(3, "big"),
            frame.esv,
            len(frame.properties),
        )
    )
    for epc, edt in frame.properties:
        if len(edt) > 0xFF:
            raise EchonetError(f"EDT of EPC 0x{epc:02X} is longer than 255 bytes")
        out += bytes((epc, len(edt))) + edt
    return bytes(out)


def decode_frame(data: bytes) -> Frame:
    if len(data) < _HEADER.size:
        raise EchonetError(
            f"frame of {len(data)} bytes is shorter than the {_HEADER.size}-byte header"
        )
    ehd, tid, seoj, deoj, esv, opc = _HEADER.unpack_from(data)
    if ehd != EHD:
        raise EchonetError(f"EHD 0x{ehd:04X} is not ECHONET Lite format 1 (0x1081)")
    properties = []
    pos = _HEADER.size
    for _ in range(opc):
        if pos + 2 > len(data):
            raise EchonetError(f"frame ends inside the property list ({len(properties)}/{opc})")
        epc, pdc = data[pos], data[pos + 1]
        edt = data[pos + 2 : pos + 2 + pdc]
        if len(edt) != pdc:
            raise EchonetError(f"EPC 0x{epc:02X}: PDC {pdc} but only {len(edt)} bytes left")
        properties.append((epc, bytes(edt)))
        pos += 2 + pdc
    if pos != len(data):
        raise EchonetError(f"{len(data) - pos} bytes after the last property")
    return Frame(
        tid,
        int.from_bytes(seoj, "big"),
        int.from_bytes(deoj, "big"),
        esv,
        tuple(properties),
    )


def get_request(tid: int, epcs: list[int] | tuple[int, ...]) -> bytes:
    """A Get (0x62) from the controller to the smart meter for the given properties."""
    return encode_frame(Frame(tid, CONTROLLER, SMART_METER, GET, tuple((e, b"") for e in epcs)))


def set_request(tid: int, properties: tuple[tuple[int, bytes], ...]) -> bytes:
    """A SetC (0x61, answered by Set_Res or SetC_SNA) to the smart meter."""
    return encode_frame(Frame(tid, CONTROLLER, SMART_METER, SETC, properties))


# --- property values ---------------------------------------------------------------------


def _unsigned(edt: bytes, size: int, epc: int) -> int:
    if len(edt) != size:
        raise EchonetError(f"EPC 0x{epc:02X} needs {size} bytes, got {len(edt)}")
    return int.from_bytes(edt, "big")


def decode_instant_power(edt: bytes) -> int | None:
    """0xE7 in W (signed: negative while exporting); None for the no-data codes."""
    if len(edt) != 4:
        raise EchonetError(f"EPC 0xE7 needs 4 bytes, got {len(edt)}")
    watts = int.from_bytes(edt, "big", signed=True)
    low, high = INSTANT_POWER_RANGE
    return watts if low <= watts <= high else None


def encode_instant_power(watts: int) -> bytes:
    return watts.to_bytes(4, "big", signed=True)


def decode_cumulative(edt: bytes) -> int | None:
    """0xE0/0xE3 raw counter; None for the no-data codes (0xFFFFFFFE, anything > 99,999,999)."""
    raw = _unsigned(edt, 4, EPC_ENERGY_NORMAL)
    return raw if raw <= CUMULATIVE_MAX else None


def encode_u32(value: int) -> bytes:
    return value.to_bytes(4, "big")


def decode_unit(edt: bytes) -> Decimal:
    code = _unsigned(edt, 1, EPC_UNIT)
    try:
        return UNITS_KWH[code]
    except KeyError:
        raise EchonetError(f"EPC 0xE1: unknown unit code 0x{code:02X}") from None


def encode_unit(unit_kwh: Decimal) -> bytes:
    code = next((c for c, u in UNITS_KWH.items() if u == unit_kwh), None)
    if code is None:
        raise EchonetError(f"{unit_kwh} kWh is not one of the coded units")
    return bytes((code,))


def decode_coefficient(edt: bytes) -> int:
    coefficient = _unsigned(edt, 4, EPC_COEFFICIENT)
    if not 1 <= coefficient <= COEFFICIENT_MAX:
        raise EchonetError(f"EPC 0xD3: coefficient {coefficient} outside 1..{COEFFICIENT_MAX}")
    return coefficient


def decode_digits(edt: bytes) -> int:
    digits = _unsigned(edt, 1, EPC_DIGITS)
    low, high = DIGITS_RANGE
    if not low <= digits <= high:
        raise EchonetError(f"EPC 0xD7: {digits} effective digits outside {low}..{high}")
    return digits


def decode_fixed_time(edt: bytes) -> tuple[datetime | None, int | None]:
    """0xEA/0xEB: the meter's wall-clock time (naive, the meter's zone) and the raw counter.

    A meter that has not yet recorded a value sends an impossible date (0xFF bytes); the
    time is then None, as is a no-data counter.
    """
    if len(edt) != 11:
        raise EchonetError(f"EPC 0xEA/0xEB needs 11 bytes, got {len(edt)}")
    year, month, day, hour, minute, second = struct.unpack(">HBBBBB", edt[:7])
    try:
        when: datetime | None = datetime(year, month, day, hour, minute, second)
    except ValueError:
        when = None
    return when, decode_cumulative(edt[7:])


def encode_fixed_time(when: datetime, raw: int) -> bytes:
    head = struct.pack(
        ">HBBBBB", when.year, when.month, when.day, when.hour, when.minute, when.second
    )
    return head + encode_u32(raw)


def decode_history(edt: bytes) -> tuple[int, list[int | None]]:
    """0xE2/0xE4: the day offset and 48 raw counters (None where the meter has no value)."""
    if len(edt) != 2 + 4 * SLOTS_PER_DAY:
        raise EchonetError(f"EPC 0xE2/0xE4 needs {2 + 4 * SLOTS_PER_DAY} bytes, got {len(edt)}")
    day = int.from_bytes(edt[:2], "big")
    return day, [decode_cumulative(edt[i : i + 4]) for i in range(2, len(edt), 4)]


def encode_history(day: int, raws: list[int | None]) -> bytes:
    return day.to_bytes(2, "big") + b"".join(_u32_or_no_data(r) for r in raws)


def _u32_or_no_data(raw: int | None) -> bytes:
    return encode_u32(NO_DATA_UNSIGNED if raw is None else raw)


def _encode_minute(when: datetime) -> bytes:
    return struct.pack(">HBBBB", when.year, when.month, when.day, when.hour, when.minute)


def _decode_minute(edt: bytes, epc: int) -> datetime:
    year, month, day, hour, minute = struct.unpack(">HBBBB", edt[:6])
    try:
        return datetime(year, month, day, hour, minute)
    except ValueError:
        raise EchonetError(f"EPC 0x{epc:02X}: impossible time {edt[:6].hex()}") from None


def encode_history2_time(newest: datetime, points: int) -> bytes:
    """0xED: the newest half-hour wanted (meter wall-clock time) and how many points back."""
    if not 1 <= points <= HISTORY2_POINTS_MAX:
        raise EchonetError(f"EPC 0xED: {points} points outside 1..{HISTORY2_POINTS_MAX}")
    return _encode_minute(newest) + bytes((points,))


def decode_history2_time(edt: bytes) -> tuple[datetime, int]:
    if len(edt) != 7:
        raise EchonetError(f"EPC 0xED needs 7 bytes, got {len(edt)}")
    return _decode_minute(edt, EPC_HISTORY2_TIME), edt[6]


def decode_history2(edt: bytes) -> tuple[datetime, list[tuple[int | None, int | None]]]:
    """0xEC: the newest time point and (normal, reverse) raw counters, newest first."""
    if len(edt) < 7:
        raise EchonetError(f"EPC 0xEC needs at least 7 bytes, got {len(edt)}")
    newest, points = _decode_minute(edt, EPC_HISTORY2), edt[6]
    if len(edt) != 7 + 8 * points:
        raise EchonetError(f"EPC 0xEC: {points} points need {7 + 8 * points} bytes, got {len(edt)}")
    pairs = [
        (decode_cumulative(edt[i : i + 4]), decode_cumulative(edt[i + 4 : i + 8]))
        for i in range(7, len(edt), 8)
    ]
    return newest, pairs


def encode_history2(newest: datetime, pairs: list[tuple[int | None, int | None]]) -> bytes:
    body = b"".join(_u32_or_no_data(n) + _u32_or_no_data(r) for n, r in pairs)
    return _encode_minute(newest) + bytes((len(pairs),)) + body


def decode_property_map(edt: bytes) -> frozenset[int]:
    """0x9D/0x9E/0x9F: a count, then the EPCs (fewer than 16) or a 16-byte bitmap where bit b
    of byte i stands for EPC 0x80 + 0x10 * b + i."""
    if not edt:
        raise EchonetError("empty property map")
    count = edt[0]
    if count < 16:
        if len(edt) != 1 + count:
            raise EchonetError(f"property map of {count} EPCs has {len(edt) - 1} bytes")
        return frozenset(edt[1:])
    if len(edt) != 17:
        raise EchonetError(f"property map of {count} EPCs needs a 16-byte bitmap")
    return frozenset(
        0x80 + 0x10 * bit + i for i in range(16) for bit in range(8) if edt[1 + i] >> bit & 1
    )


def encode_property_map(epcs: frozenset[int] | set[int]) -> bytes:
    if len(epcs) < 16:
        return bytes((len(epcs), *sorted(epcs)))
    bitmap = bytearray(16)
    for epc in epcs:
        bitmap[epc & 0x0F] |= 1 << ((epc >> 4) - 8)
    return bytes((len(epcs),)) + bytes(bitmap)


def decode_current_date(edt: bytes) -> date:
    """0x98: the meter's date (its own wall clock)."""
    if len(edt) != 4:
        raise EchonetError(f"EPC 0x98 needs 4 bytes, got {len(edt)}")
    year, month, day = struct.unpack(">HBB", edt)
    try:
        return date(year, month, day)
    except ValueError:
        raise EchonetError(f"EPC 0x98: impossible date {edt.hex()}") from None


def encode_current_date(today: date) -> bytes:
    return struct.pack(">HBB", today.year, today.month, today.day)


# --- scaling and rollover ----------------------------------------------------------------


@dataclass(frozen=True)
class Scale:
    """What turns a raw cumulative counter into kWh (0xD3, 0xE1) and where it wraps (0xD7)."""

    coefficient: int = 1  # 0xD3 is optional: a meter without it means 1
    unit_kwh: Decimal = Decimal("1")
    digits: int = 8

    def kwh(self, raw: int) -> float:
        """kWh = raw x coefficient x unit."""
        return float(Decimal(raw) * self.coefficient * self.unit_kwh)


@dataclass(frozen=True)
class CounterState:
    """What `unwrap` remembers between readings of one counter."""

    last_raw: int | None = None
    wraps: int = 0


def unwrap(raw: int, digits: int, state: CounterState) -> tuple[int, CounterState]:
    """The counter with its wraps at 10**digits added back, and the state for the next call.

    A drop of more than half the range is a wrap (the counter went 99999 -> 00012); a
    smaller drop is passed through as it is (a meter reset or exchange, which the daily
    totals detect) rather than invented into a wrap.
    """
    modulus = 10**digits
    wraps = state.wraps
    if state.last_raw is not None and state.last_raw - raw > modulus // 2:
        wraps += 1
    return raw + wraps * modulus, CounterState(raw, wraps)


def unwrap_near(raw: int, digits: int, reference: int | None) -> int:
    """`raw` plus the whole number of wraps that brings it closest to `reference`.

    For a half-hour register read back from the meter's memory: it lies within days of the
    live counter (already unwrapped), far less than half the range, so the nearest is right.
    """
    if reference is None:
        return raw
    modulus = 10**digits
    return raw + round((reference - raw) / modulus) * modulus
