"""The durable outbox: order, acknowledgement, size bound, meter state, and the meter mapping."""

from __future__ import annotations

import sqlite3
import subprocess
import sys
from datetime import UTC, datetime, timedelta
from decimal import Decimal

import pytest
import serial
from edge_harness import FAST, PASSWORD, ROUTE_B_ID, simulated

from contracts.message import Reading
from edge import echonet as el
from edge.credentials import Credentials
from edge.meter import Meter, parse_fields
from edge.outbox import Outbox
from edge.simulator import Faults, ModuleSim, PtyServer, SimulatedMeter
from edge.skstack import Driver, module_family

T0 = datetime(2025, 12, 17, 3, 4, 5, 250_000, tzinfo=UTC)


def readings(n: int, start: int = 0) -> list[Reading]:
    return [
        Reading(ts=T0 + timedelta(seconds=start + i), source="meter1", instant_power_w=100.0 + i)
        for i in range(n)
    ]


def test_readings_come_back_oldest_first_with_their_seq(tmp_path) -> None:
    with Outbox(tmp_path / "o.db") as outbox:
        seqs = outbox.add_many(readings(5))
        assert seqs == [1, 2, 3, 4, 5]
        batch = outbox.oldest(3)
        assert [r.seq for r in batch] == [1, 2, 3]
        assert batch[0] == Reading(ts=T0, source="meter1", instant_power_w=100.0, seq=1)
        assert [r.seq for r in outbox.oldest(10, after_seq=3)] == [4, 5]


def test_absent_fields_stay_absent(tmp_path) -> None:
    with Outbox(tmp_path / "o.db") as outbox:
        outbox.add(Reading(ts=T0, source="meter1", energy_import_kwh=1234.5))
        (back,) = outbox.oldest(1)
        assert back.instant_power_w is None and back.energy_export_kwh is None
        assert back.energy_import_kwh == 1234.5


def test_acknowledged_readings_are_deleted_and_seq_is_never_reused(tmp_path) -> None:
    path = tmp_path / "o.db"
    with Outbox(path) as outbox:
        outbox.add_many(readings(3))
        assert outbox.delete([1, 2, 3]) == 3
        assert outbox.pending() == 0
    with Outbox(path) as reopened:
        assert reopened.add(readings(1, start=10)[0]) == 4


def test_size_bound_evicts_the_oldest_and_counts_it(tmp_path, caplog) -> None:
    with Outbox(tmp_path / "o.db", max_readings=4) as outbox:
        outbox.add_many(readings(3))
        outbox.add_many(readings(3, start=3))
        assert outbox.pending() == 4
        assert outbox.evicted() == 2
        assert [r.seq for r in outbox.oldest(10)] == [3, 4, 5, 6]
    assert "evicted the 2 oldest, 2 evicted in total" in caplog.text


def test_state_is_stored_with_the_reading(tmp_path) -> None:
    with Outbox(tmp_path / "o.db") as outbox:
        outbox.add(readings(1)[0], {"meter_counters": '{"energy_import_kwh": [5, 1]}'})
        assert outbox.state("meter_counters") == '{"energy_import_kwh": [5, 1]}'
        assert outbox.state("nothing") is None


def test_a_killed_writer_loses_no_committed_reading(tmp_path) -> None:
    """kill -9 right after add() returns: the reading is in the WAL, and a reopen sees it."""
    path = tmp_path / "o.db"
    script = (
        "import os, signal, sys\n"
        "from datetime import UTC, datetime, timedelta\n"
        "from contracts.message import Reading\n"
        "from edge.outbox import Outbox\n"
        f"o = Outbox({str(path)!r})\n"
        "t0 = datetime(2025, 12, 17, tzinfo=UTC)\n"
        "for i in range(50):\n"
        "    o.add(Reading(ts=t0 + timedelta(seconds=i), source='m', instant_power_w=1.0))\n"
        "os.kill(os.getpid(), signal.SIGKILL)\n"
    )
    result = subprocess.run([sys.executable, "-c", script], timeout=60, check=False)
    assert result.returncode == -9
    with Outbox(path) as outbox:
        assert outbox.pending() == 50
        assert [r.seq for r in outbox.oldest(100)] == list(range(1, 51))
    assert sqlite3.connect(path).execute("PRAGMA journal_mode").fetchone() == ("wal",)


def test_bad_bound_is_refused(tmp_path) -> None:
    with pytest.raises(ValueError, match="at least 1"):
        Outbox(tmp_path / "o.db", max_readings=0)


# --- the meter mapping, against the simulator --------------------------------------------


def test_meter_reading_in_kwh_and_watts() -> None:
    with simulated(coefficient=10, unit_kwh=Decimal("0.01"), start_raw=5_000) as (driver, _):
        driver.connect()
        meter = Meter(driver, "meter1")
        reading = meter.read()
        assert meter.scale == el.Scale(10, Decimal("0.01"), 6)
        assert reading is not None
        assert 500.0 <= reading.energy_import_kwh < 501.0  # 5000 x 10 x 0.01
        assert reading.energy_export_kwh == 0.0
        assert reading.instant_power_w > 0


def test_meter_counter_rollover_is_unwrapped_and_survives_a_restart() -> None:
    # 0.001 kWh per count, 10 counts below 10**6, and a meter clock that moves 2 minutes
    # per reading (a few Wh each): the counter wraps during the readings.
    meter_time = [1_765_940_000.0]
    fast = {"unit_kwh": Decimal("0.001"), "start_raw": 999_990, "clock": lambda: meter_time[0]}
    values = []
    with simulated(**fast) as (driver, _):
        driver.connect()
        meter = Meter(driver, "meter1", ("energy_import_kwh",))
        for _ in range(4):
            values.append(meter.read().energy_import_kwh)
            meter_time[0] += 120
        restarted = Meter(driver, "meter1", ("energy_import_kwh",))
        restarted.restore(meter.state())
        values.append(restarted.read().energy_import_kwh)
    assert values == sorted(values), values
    assert values[0] < 1000.0 < values[-1], values  # crossed 10**6 counts x 0.001 kWh


def test_properties_setting() -> None:
    assert parse_fields("instant_power_w, energy_import_kwh") == (
        "instant_power_w",
        "energy_import_kwh",
    )
    with pytest.raises(ValueError, match="EDGE_PROPERTIES 'power'"):
        parse_fields("power")


def test_meter_that_has_no_data_yet_gives_no_reading() -> None:
    meter = SimulatedMeter()
    meter.property = lambda epc, now: (  # type: ignore[method-assign]
        b"\x7f\xff\xff\xfe"
        if epc == el.EPC_INSTANT_POWER
        else SimulatedMeter.property(meter, epc, now)
    )
    sim = ModuleSim(meter, "bp35a1", Faults())
    with PtyServer(sim) as server, serial.Serial(server.path, 115200, timeout=0.02) as port:
        driver = Driver(port, module_family("bp35a1"), Credentials(ROUTE_B_ID, PASSWORD), FAST)
        driver.connect()
        assert Meter(driver, "meter1", ("instant_power_w",)).read() is None
