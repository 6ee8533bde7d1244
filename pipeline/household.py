"""Realistic household demand curves for sample data and the forecast benchmark.

A household's power is a standby base load plus what its people do: a morning and an evening
peak whose times differ between working days and days off (weekends and Japanese public
holidays, from the `holidays` library), daytime use on days off, heating in winter and air
conditioning in summer, whole days away, and noise. Everything random is drawn per source and
per half hour from a seeded generator over the half hours since a fixed epoch, so a reading's
power depends only on the source, the seed and its half hour: the same curve whatever the
reading interval or the span generated, and the same numbers on every run.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable
from dataclasses import dataclass
from datetime import date, datetime

import holidays
import numpy as np
import pandas as pd

HALF_HOUR_S = 1800
# Random draws are indexed by half hours since this instant (before any sample data).
EPOCH = pd.Timestamp("2000-01-01T00:00:00Z")


@dataclass(frozen=True)
class Household:
    """What makes one source's curve its own (drawn from the source's name and the seed)."""

    base_w: float
    morning_w: float
    evening_w: float
    daytime_w: float
    heating_w: float
    cooling_w: float

    @classmethod
    def of(cls, source: str, seed: int) -> Household:
        rng = _rng(source, seed, "household")
        return cls(
            base_w=rng.uniform(150, 400),
            morning_w=rng.uniform(500, 1000),
            evening_w=rng.uniform(900, 1600),
            daytime_w=rng.uniform(200, 500),
            heating_w=rng.uniform(300, 900),
            cooling_w=rng.uniform(200, 700),
        )


def _rng(source: str, seed: int, purpose: str) -> np.random.Generator:
    digest = hashlib.sha256(f"{seed}|{source}|{purpose}".encode()).digest()
    return np.random.default_rng(int.from_bytes(digest[:8], "little"))


def _bump(hour: np.ndarray, centre: float | np.ndarray, width: float | np.ndarray) -> np.ndarray:
    return np.exp(-((hour - centre) ** 2) / (2 * width**2))


def days_off(first: date, last: date) -> set[date]:
    """Weekends and Japanese public holidays between two dates, inclusive."""
    holiday_dates = set(holidays.Japan(years=range(first.year, last.year + 1)))
    return {d.date() for d in pd.date_range(first, last) if d.weekday() >= 5} | {
        d for d in holiday_dates if first <= d <= last
    }


def household_power_w(
    source: str, instants_utc: pd.DatetimeIndex, tz: str, seed: int = 0
) -> np.ndarray:
    """Power in W drawn by `source` at each instant (UTC-aware)."""
    house = Household.of(source, seed)
    local = instants_utc.tz_convert(tz)
    hour = np.asarray(local.hour + local.minute / 60 + local.second / 3600, dtype=float)
    days = np.asarray(local.normalize().tz_localize(None).date)
    off = np.isin(days, np.array(list(days_off(days.min(), days.max()))))
    season = 2 * np.pi * np.asarray(local.dayofyear, dtype=float) / 365.25
    winter = np.clip(np.cos(season - 2 * np.pi * 20 / 365.25), 0, None)  # coldest ~20 Jan
    summer = np.clip(np.cos(season - 2 * np.pi * 215 / 365.25), 0, None) ** 2  # hottest ~3 Aug

    morning = house.morning_w * np.where(off, 0.8 * _bump(hour, 8.5, 1.3), _bump(hour, 7.0, 0.7))
    evening = house.evening_w * _bump(hour, np.where(off, 18.5, 19.5), 1.6)
    daytime = house.daytime_w * np.where(off, _bump(hour, 13.5, 2.5), 0.15 * _bump(hour, 13, 3))
    awake = morning + evening + daytime
    heating = house.heating_w * winter * (_bump(hour, 7.5, 1.5) + _bump(hour, 20, 2.5))
    cooling = house.cooling_w * summer * (_bump(hour, 15, 3) + 0.6 * _bump(hour, 23, 3))

    slot = np.asarray((instants_utc - EPOCH) // pd.Timedelta(seconds=HALF_HOUR_S), dtype=np.int64)
    busy = _draws(source, seed, "busy", slot, lambda rng, n: rng.lognormal(0.0, 0.3, n))
    appliance = _draws(
        source,
        seed,
        "appliance",
        slot,
        lambda rng, n: np.where(rng.random(n) < 0.06, rng.uniform(600, 1800, n), 0.0),
    )
    wobble = _draws(source, seed, "base", slot, lambda rng, n: rng.normal(1.0, 0.05, n))
    day = slot // 48
    away = _draws(source, seed, "away", day, lambda rng, n: rng.random(n) < 0.02)
    active = (awake + heating + cooling) * _day_level(source, seed, day) * busy + appliance
    return house.base_w * wobble + np.where(away, 0.1, 1.0) * active


_BLOCK = 1024


def _draws(
    source: str,
    seed: int,
    purpose: str,
    index: np.ndarray,
    draw: Callable[[np.random.Generator, int], np.ndarray],
) -> np.ndarray:
    """Random values per absolute index (half hour or day since EPOCH), drawn in seeded blocks
    so a value never depends on which span was asked for."""
    blocks = range(int(index.min()) // _BLOCK, int(index.max()) // _BLOCK + 1)
    values = np.concatenate([draw(_rng(source, seed, f"{purpose} {b}"), _BLOCK) for b in blocks])
    return values[index - blocks[0] * _BLOCK]


_DAY_MEMORY = 10  # days a level shock lasts (AR(1) coefficient 0.6, truncated)


def _day_level(source: str, seed: int, day: np.ndarray) -> np.ndarray:
    """A level that drifts from day to day (weather, guests): an AR(1) of daily shocks."""
    lagged = [day - k for k in range(_DAY_MEMORY)]
    shocks = [_draws(source, seed, "day", d, lambda rng, n: rng.normal(0, 0.08, n)) for d in lagged]
    return np.exp(sum(0.6**k * shock for k, shock in enumerate(shocks)))


def half_hourly_energy(
    sources: list[str], first: date, last: date, tz: str, seed: int = 0
) -> pd.DataFrame:
    """Half-hourly kWh of each source over the local days [first, last], the shape of
    `fct_half_hourly_energy` (power held over each half hour)."""
    start = pd.Timestamp(datetime.combine(first, datetime.min.time())).tz_localize(tz)
    end = pd.Timestamp(datetime.combine(last, datetime.min.time())).tz_localize(tz)
    buckets = pd.date_range(
        start.tz_convert("UTC"), (end + pd.Timedelta(days=1)).tz_convert("UTC"), freq="30min"
    )[:-1]
    frames = []
    for source in sources:
        power = household_power_w(source, buckets, tz, seed)
        frames.append(
            pd.DataFrame(
                {
                    "source": source,
                    "date_jst": buckets.tz_convert(tz).tz_localize(None).normalize().date,
                    "bucket_start_utc": buckets,
                    "bucket_start_jst": buckets.tz_convert(tz).tz_localize(None),
                    "energy_kwh": power * HALF_HOUR_S / 3.6e6,
                }
            )
        )
    return pd.concat(frames, ignore_index=True)
