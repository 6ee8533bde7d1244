"""The meter's memory: read-back after downtime, pushes, pacing, rollover and line noise.

The edge's loop runs against the simulated module and meter on a virtual clock
(devstack/virtual_edge.py): days of polling at realistic request pacing take seconds.
"""

from __future__ import annotations

import itertools
import os
import subprocess
import sys
from collections import Counter
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from pathlib import Path
from zoneinfo import ZoneInfo

import pytest
from conftest import REPO
from edge_harness import edge_status

from contracts.message import Reading
from devstack.virtual_edge import VirtualEdge
from edge import echonet as el
from edge.app import EdgeConfig
from edge.recovery import RECOVERED_KEY, RecoverySettings
from edge.simulator import Faults, SimulatedMeter, VirtualClock

pytestmark = pytest.mark.timeout(120)

START = datetime(2025, 11, 24, 16, 7, 12, tzinfo=UTC).timestamp()
HALF_HOUR = timedelta(minutes=30)


def virtual_edge(
    tmp_path: Path,
    *,
    module: str = "bp35a1",
    history2: bool = True,
    faults: Faults | None = None,
    poll: float = 10.0,
    requests_per_minute: float = 6.0,
    days: int = 45,
    unit: str = "0.01",
    digits: int = 6,
    start_raw: int = 20_000,
) -> VirtualEdge:
    clock = VirtualClock(START)
    meter = SimulatedMeter(
        unit_kwh=Decimal(unit),
        digits=digits,
        start_raw=start_raw,
        clock=clock.time,
        history2=history2,
    )
    config = EdgeConfig(
        serial_port="virtual",
        module=module,
        poll_seconds=poll,
        request_spacing_s=1.0,
        recovery=RecoverySettings(max_days=days, requests_per_minute=requests_per_minute),
    )
    return VirtualEdge(tmp_path / "outbox.db", config, clock, meter, faults)


def stored(edge: VirtualEdge) -> list[Reading]:
    return edge.outbox.oldest(10**7)


def registers(edge: VirtualEdge) -> dict[datetime, float]:
    """The half-hour registers in the outbox (energy only, at a boundary), each once."""
    found = [r for r in stored(edge) if r.instant_power_w is None]
    counts = Counter(r.ts for r in found)
    assert not [ts for ts, n in counts.items() if n > 1], "a half hour stored twice"
    assert all(ts.minute % 30 == 0 and ts.second == 0 for ts in counts)
    return {r.ts: r.energy_import_kwh for r in found}  # type: ignore[misc]


def boundaries(first: datetime, last: datetime) -> list[datetime]:
    out = []
    while first <= last:
        out.append(first)
        first += HALF_HOUR
    return out


def assert_true_registers(edge: VirtualEdge, found: dict[datetime, float]) -> None:
    """Each register is the meter's counter at its boundary; unwrapped, they never go down."""
    unit = float(edge.meter.unit_kwh)
    modulus = 10**edge.meter.digits
    for ts, kwh in found.items():
        assert round(kwh / unit) % modulus == edge.meter.raw_counter(ts.timestamp()), ts
    values = [found[ts] for ts in sorted(found)]
    assert all(b >= a for a, b in itertools.pairwise(values))


def test_first_start_reads_back_45_days_oldest_first(tmp_path) -> None:
    edge = virtual_edge(tmp_path, requests_per_minute=60, start_raw=500_000)
    edge.run_for(3 * 3600)
    found = registers(edge)
    now = datetime.fromtimestamp(edge.clock.time(), UTC)
    oldest = min(found)
    assert oldest <= now - timedelta(days=45) + HALF_HOUR
    newest_owed = now.replace(minute=now.minute // 30 * 30, second=0, microsecond=0)
    assert list(found) == boundaries(oldest, newest_owed)  # complete, oldest first
    assert_true_registers(edge, found)
    assert edge.outbox.state(RECOVERED_KEY) == newest_owed.strftime("%Y-%m-%dT%H:%M:%S.000Z")
    status = edge_status(tmp_path / "outbox.db")
    assert f"last half-hour  {edge.outbox.state(RECOVERED_KEY)}" in status
    assert "link quality    LQI 225 (about -42.4 dBm)" in status
    assert f"pending         {len(stored(edge)):,} readings" in status


def test_status_without_an_outbox_says_where_it_looked(tmp_path) -> None:
    result = subprocess.run(
        [sys.executable, "-m", "edge", "status"],
        cwd=REPO,
        env={**os.environ, "EDGE_OUTBOX_PATH": str(tmp_path / "none.db")},
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert result.returncode == 2
    assert f"no outbox at {tmp_path / 'none.db'}" in result.stderr


@pytest.mark.parametrize(
    ("module", "history2"), [("bp35a1", True), ("bp35c0", False), ("rl7023", True)]
)
def test_three_days_off_then_every_half_hour_once_with_live_polling_going_on(
    tmp_path, module: str, history2: bool
) -> None:
    # 9,990 kWh on a counter that wraps at 10,000 kWh: it rolls over while the Pi is off.
    edge = virtual_edge(tmp_path, module=module, history2=history2, days=4, start_raw=999_000)
    edge.run_for(4 * 3600)  # caught up with the 4 days a first start reads
    before = registers(edge)
    off_at = datetime.fromtimestamp(edge.clock.time(), UTC)
    edge.clock.sleep(3 * 86_400)  # the Pi is off for three days; the meter goes on
    edge.start_loop()
    requests_before = edge.driver.requests
    live_before = len(stored(edge))
    edge.run_for(900)
    edge.start_loop()  # a restart in the middle of the read-back: nothing twice, nothing lost
    edge.run_for(2 * 3600)
    found = registers(edge)
    now = datetime.fromtimestamp(edge.clock.time(), UTC)
    newest_owed = now.replace(minute=now.minute // 30 * 30, second=0, microsecond=0)
    assert list(found) == boundaries(min(before), newest_owed)
    assert min(found) < off_at and all(ts in found for ts in before)
    assert_true_registers(edge, found)
    assert edge.loop.meter.counters["energy_import_kwh"].wraps == 1  # the rollover happened
    # Live polling went on during the read-back, at no more than 2 s extra per poll.
    live = [r.ts for r in stored(edge)[live_before:] if r.instant_power_w is not None]
    gaps = [(b - a).total_seconds() for a, b in itertools.pairwise(live)]
    assert len(live) > 700 and max(gaps) <= 10 + 3
    # Pacing: the read-back's requests stayed within its rate (live Gets are one per poll).
    readback = edge.driver.requests - requests_before - len(live)
    assert readback <= 6 * (edge.clock.time() - off_at.timestamp() - 3 * 86_400) / 60 + 3


def test_pushes_extend_the_watermark_without_reading_back(tmp_path) -> None:
    edge = virtual_edge(tmp_path, days=1, requests_per_minute=60)
    edge.run_for(3600)
    caught_up = len(registers(edge))
    requests, polls = edge.driver.requests, 0
    end = edge.clock.time() + 3 * 3600
    while edge.clock.time() < end:
        edge.loop.poll_once()
        polls += 1
        edge.clock.sleep(10)
    assert len(registers(edge)) == caught_up + 6  # six half hours, each from its push
    assert edge.driver.requests - requests == polls  # only the live Gets
    assert_true_registers(edge, registers(edge))


@pytest.mark.parametrize("module", ["bp35a1", "bp35c0", "rl7023", "rs-wsuha-p"])
def test_one_percent_of_lines_garbled_for_ten_minutes(tmp_path, module: str) -> None:
    faults = Faults(garble_rate=0.01, seed=sum(map(ord, module)))
    edge = virtual_edge(tmp_path, module=module, faults=faults, days=1, poll=1.0)
    answered: list[el.Frame] = []
    exchange = edge.driver._exchange

    def recording(frame: bytes, tid: int) -> el.Frame:  # what the driver took from the meter
        answer = exchange(frame, tid)
        answered.append(answer)
        return answer

    edge.driver._exchange = recording  # type: ignore[method-assign]
    edge.clock.sleep(1800 - edge.clock.time() % 1800 - 300)  # 10 minutes around a half hour
    edge.run_for(600)
    assert edge.sim.garbled >= 5
    # Some garbling leaves a line that still parses as itself (a cut OK is an empty line,
    # a Z in a command's echo is still an echo); what cannot be parsed is counted.
    assert sum(edge.driver.unparsed.values()) > 0
    # Every answer that reached the port intact was taken, and became what it carried.
    intact = {tag[1] for tag in edge.sim.intact if tag[0] == "answer"}  # type: ignore[index]
    assert intact <= {answer.tid for answer in answered}
    live = [r for r in stored(edge) if r.instant_power_w is not None]
    assert len(live) == sum(el.EPC_INSTANT_POWER in a.values() for a in answered) >= 250
    # The half hour that passed is stored once (pushed, or read back if its push was garbled).
    registers(edge)
    boundary = datetime.fromtimestamp(edge.clock.time() // 1800 * 1800, UTC)
    edge.run_for(120)
    assert boundary in registers(edge)


def test_a_meter_that_refuses_the_read_back_keeps_the_session_and_live_polls(
    tmp_path, caplog
) -> None:
    edge = virtual_edge(tmp_path, days=1)
    edge.meter.set_property = lambda epc, edt: False  # type: ignore[method-assign]
    edge.run_for(1200)
    assert "meter memory: the meter refused to set 0xE5" in caplog.text
    assert not registers(edge)
    live = [r for r in stored(edge) if r.instant_power_w is not None]
    assert len(live) >= 115 and edge.sim.joins == 1  # no rejoin, no gap
    # Paused 5 minutes after each refusal: 4 tries (a SetC each) in 20 minutes, not 200.
    assert edge.driver.requests - len(live) <= 1 + 4 + 1


def test_the_simulated_meter_remembers_what_its_counter_said(tmp_path) -> None:
    clock = VirtualClock(START)
    meter = SimulatedMeter(unit_kwh=Decimal("0.01"), digits=5, start_raw=1_000, clock=clock.time)
    # Energy is the integral of the load curve, minute by minute.
    minute = START // 60 * 60
    assert meter.energy_kwh(minute + 60) - meter.energy_kwh(minute) == pytest.approx(
        meter.power_w(minute) / 60_000
    )
    # 0xE2 of 3 days ago: the counter at each half hour of that day, wrapped at 10**5 (the
    # counter read 10 kWh now, so it was below zero, i.e. near 1,000 kWh, back then).
    assert meter.set_property(el.EPC_HISTORY_DAY, bytes((3,)))
    day, raws = el.decode_history(meter.property(el.EPC_HISTORY_NORMAL, START) or b"")
    assert day == 3 and all(r is not None for r in raws)
    local = datetime.fromtimestamp(START, ZoneInfo("Asia/Tokyo")).date() - timedelta(days=3)
    midnight = datetime.combine(local, datetime.min.time(), ZoneInfo("Asia/Tokyo")).timestamp()
    expected = [int(meter.energy_kwh(midnight + i * 1800) / 0.01) % 10**5 for i in range(48)]
    assert raws == expected and max(raws) > 90_000  # before the rollover
    # Today's slots after now have no value; beyond the history nothing is kept.
    assert meter.set_property(el.EPC_HISTORY_DAY, bytes((0,)))
    assert el.decode_history(meter.property(el.EPC_HISTORY_NORMAL, START) or b"")[1][-1] is None
    assert meter.register(START - 50 * 86_400, START) is None
    assert not meter.set_property(el.EPC_HISTORY_DAY, bytes((100,)))
