"""The edge's meter loop against the simulated module and meter on a virtual clock.

No pty, no threads, no waiting: the driver's serial port is the simulator itself
(`edge.simulator.VirtualPort`), and every sleep moves the clock shared by the driver, the
module, the meter and the readings' timestamps. Days of polling at realistic request pacing
run in seconds; tests and scripts/bench_edge.py use it to drive `EdgeLoop.poll_once`.
"""

from __future__ import annotations

from dataclasses import replace
from datetime import UTC, datetime
from pathlib import Path

from edge.app import EdgeConfig, EdgeLoop
from edge.credentials import Credentials
from edge.outbox import Outbox
from edge.simulator import Faults, ModuleSim, SimulatedMeter, VirtualClock, VirtualPort
from edge.skstack import Driver, Settings, module_family

ROUTE_B_ID = "0123456789ABCDEF0123456789ABCDEF"
PASSWORD = "PASSW0RD1234"


class VirtualEdge:
    """A simulated module + meter and the edge's loop with its own outbox, on one clock."""

    def __init__(
        self,
        outbox_path: Path,
        config: EdgeConfig,
        clock: VirtualClock,
        meter: SimulatedMeter,
        faults: Faults | None = None,
        settings: Settings | None = None,
    ) -> None:
        self.clock, self.config, self.meter = clock, config, meter
        self.sim = ModuleSim(meter, config.module, faults or Faults(), clock=clock.time)
        self.sim.expected_id, self.sim.expected_password = ROUTE_B_ID, PASSWORD
        settings = replace(
            settings or Settings(), request_spacing_s=config.request_spacing_s, join_backoff_s=1.0
        )
        self.driver = Driver(
            VirtualPort(self.sim, clock),
            module_family(config.module),
            Credentials(ROUTE_B_ID, PASSWORD),
            settings,
            clock=clock.time,
            sleep=clock.sleep,
        )
        self.outbox = Outbox(outbox_path)
        self.loop = self.start_loop()

    def start_loop(self) -> EdgeLoop:
        """A new EdgeLoop on the same outbox: what a restart of `python -m edge` does."""
        self.driver.joined = False
        self.loop = EdgeLoop(
            self.config,
            self.driver,
            self.outbox,
            now=lambda: datetime.fromtimestamp(self.clock.time(), UTC),
        )
        return self.loop

    def run_for(self, seconds: float) -> None:
        """Poll on the loop's fixed schedule until `seconds` of virtual time have passed."""
        end = self.clock.time() + seconds
        next_poll = self.clock.time()
        while self.clock.time() < end:
            self.loop.poll_once()
            next_poll = max(next_poll + self.config.poll_seconds, self.clock.time())
            self.clock.sleep(next_poll - self.clock.time())

    def close(self) -> None:
        self.outbox.close()
