"""ECHONET Lite frames for the low-voltage smart meter (class 0x0288), as pure functions.

A frame (format 1, EHD 0x1081) is: EHD(2) TID(2) SEOJ(3) DEOJ(3) ESV(1) OPC(1), then OPC
properties of EPC(1) PDC(1) EDT(PDC). Integers are big-endian. Nothing here does I/O: the
driver sends the bytes `get_request` builds and hands what comes back to `decode_frame`.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass
from datetime import datetime
from decimal import Decimal

EHD = 0x1081
UDP_PORT = 0x0E1A  # 3610, where every ECHONET Lite node listens
CONTROLLER = 0x05FF01  # SEOJ: controller class, instance 1 (the HEMS side)
SMART_METER = 0x028801  # DEOJ: low-voltage smart electric energy meter, instance 1
NODE_PROFILE = 0x0EF001  # source of the instance-list notification a meter sends on join

# Service codes (ESV)
GET = 0x62
GET_RES = 0x72
GET_SNA = 0x52  # "service not available": the meter answered but without some values
INF = 0x73
INFC = 0x74
INFC_RES = 0x7A
RESPONSES = frozenset({GET_RES, GET_SNA, INF, INFC})

# Properties of class 0x0288
EPC_COEFFICIENT = 0xD3
EPC_DIGITS = 0xD7
EPC_ENERGY_NORMAL = 0xE0
EPC_UNIT = 0xE1
EPC_ENERGY_REVERSE = 0xE3
EPC_INSTANT_POWER = 0xE7
EPC_FIXED_TIME_NORMAL = 0xEA  # every 30 minutes: date-time + cumulative, normal direction
EPC_FIXED_TIME_REVERSE = 0xEB

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
NO_DATA_SIGNED = 0x7FFFFFFE
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
