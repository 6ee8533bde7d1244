"""From ECHONET properties of the smart meter to the contract's Reading."""

from __future__ import annotations

import json
import logging
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime

from contracts.message import Reading
from edge import echonet as el
from edge.skstack import Driver

log = logging.getLogger(__name__)

# The message fields the edge can fill, and the property each one reads.
FIELD_PROPERTIES: dict[str, int] = {
    "instant_power_w": el.EPC_INSTANT_POWER,
    "energy_import_kwh": el.EPC_ENERGY_NORMAL,
    "energy_export_kwh": el.EPC_ENERGY_REVERSE,
}
CUMULATIVE = {"energy_import_kwh", "energy_export_kwh"}


def parse_fields(text: str) -> tuple[str, ...]:
    """`EDGE_PROPERTIES`: a comma-separated subset of the message fields."""
    fields = tuple(f.strip() for f in text.split(",") if f.strip())
    unknown = [f for f in fields if f not in FIELD_PROPERTIES]
    if unknown or not fields:
        raise ValueError(
            f"EDGE_PROPERTIES {text!r}: expected a comma-separated subset of "
            f"{', '.join(FIELD_PROPERTIES)}"
        )
    return fields


def read_scale(driver: Driver) -> el.Scale:
    """Coefficient (optional, default 1), unit and effective digits: once per session."""
    values = driver.get((el.EPC_COEFFICIENT, el.EPC_UNIT, el.EPC_DIGITS)).values()
    missing = [f"0x{epc:02X}" for epc in (el.EPC_UNIT, el.EPC_DIGITS) if epc not in values]
    if missing:
        raise el.EchonetError(f"the meter did not give its {' and '.join(missing)}")
    coefficient = values.get(el.EPC_COEFFICIENT)
    return el.Scale(
        coefficient=el.decode_coefficient(coefficient) if coefficient else 1,
        unit_kwh=el.decode_unit(values[el.EPC_UNIT]),
        digits=el.decode_digits(values[el.EPC_DIGITS]),
    )


@dataclass
class Meter:
    """Polls the configured properties; keeps each counter's rollover state."""

    driver: Driver
    source: str
    fields: tuple[str, ...] = tuple(FIELD_PROPERTIES)
    scale: el.Scale | None = None
    clock: Callable[[], datetime] = lambda: datetime.now(UTC)

    def __post_init__(self) -> None:
        self.counters: dict[str, el.CounterState] = {}

    def restore(self, saved: str | None) -> None:
        """Counter states saved by `state()` (in the outbox) before a restart."""
        for name, (last_raw, wraps) in json.loads(saved or "{}").items():
            self.counters[name] = el.CounterState(last_raw, wraps)

    def state(self) -> str:
        return json.dumps({n: [s.last_raw, s.wraps] for n, s in self.counters.items()})

    def ensure_scale(self) -> el.Scale:
        if self.scale is None:
            self.scale = read_scale(self.driver)
        return self.scale

    def read(self) -> Reading | None:
        """One reading of the configured fields; None when the meter had none of them."""
        self.ensure_scale()
        values = self.driver.get(tuple(FIELD_PROPERTIES[f] for f in self.fields)).values()
        ts = self.clock()
        measured: dict[str, float] = {}
        for name in self.fields:
            edt = values.get(FIELD_PROPERTIES[name])
            value = self._decode(name, edt) if edt else None
            if value is not None:
                measured[name] = value
        return self._reading(ts, measured)

    def _reading(self, ts: datetime, measured: dict[str, float]) -> Reading | None:
        """The measured fields as a reading (the others None); None when none was measured."""
        if not measured:
            return None
        return Reading(
            ts=ts,
            source=self.source,
            instant_power_w=measured.get("instant_power_w"),
            energy_import_kwh=measured.get("energy_import_kwh"),
            energy_export_kwh=measured.get("energy_export_kwh"),
        )

    def _decode(self, name: str, edt: bytes) -> float | None:
        if name not in CUMULATIVE:
            watts = el.decode_instant_power(edt)
            return None if watts is None else float(watts)
        raw = el.decode_cumulative(edt)
        if raw is None or self.scale is None:
            return None
        counter, self.counters[name] = el.unwrap(
            raw, self.scale.digits, self.counters.get(name, el.CounterState())
        )
        return self.scale.kwh(counter)

    def register_reading(
        self, ts: datetime, import_raw: int | None, export_raw: int | None
    ) -> Reading | None:
        """A half-hour register (read back or pushed) as a reading at its boundary: energy
        only (design.md section 10). Its wraps are those that put it nearest the live counter,
        so it lines up with the live readings even across a rollover."""
        scale = self.ensure_scale()
        measured: dict[str, float] = {}
        for name, raw in (("energy_import_kwh", import_raw), ("energy_export_kwh", export_raw)):
            if raw is None or name not in self.fields:
                continue
            state = self.counters.get(name)
            reference = (
                None
                if state is None or state.last_raw is None
                else state.last_raw + state.wraps * 10**scale.digits
            )
            counter = el.unwrap_near(raw, scale.digits, reference)
            if counter < 0:  # before a rollover this edge never counted: no absolute value
                log.warning("%s register at %s precedes a rollover the edge has not seen", name, ts)
                continue
            measured[name] = scale.kwh(counter)
        return self._reading(ts, measured)
