"""The edge under test: the simulated Wi-SUN module and meter on a pty, and the edge and the
simulator as real processes (`python -m edge`, `python -m edge.simulator`)."""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import serial
from conftest import REPO

from devstack.secure_broker import SecureMosquittoServer
from edge.credentials import Credentials
from edge.outbox import Outbox
from edge.simulator import Faults, ModuleSim, PtyServer, SimulatedMeter
from edge.skstack import Driver, Settings, module_family

ROUTE_B_ID = "0123456789ABCDEF0123456789ABCDEF"
PASSWORD = "PASSW0RD1234"
FAST = Settings(
    command_timeout_s=1.0,
    join_timeout_s=2.0,
    answer_timeout_s=0.5,
    request_spacing_s=0.0,
    scan_durations=(4, 5, 6),
    scan_retries=1,
    scan_margin_s=1.0,
    join_backoff_s=0.01,
)


@contextmanager
def simulated(
    family: str = "bp35a1", faults: Faults | None = None, settings: Settings = FAST, **meter: object
) -> Iterator[tuple[Driver, ModuleSim]]:
    sim = ModuleSim(SimulatedMeter(**meter), family, faults or Faults())  # type: ignore[arg-type]
    sim.expected_id, sim.expected_password = ROUTE_B_ID, PASSWORD
    with PtyServer(sim) as server, serial.Serial(server.path, 115200, timeout=0.02) as port:
        creds = Credentials(ROUTE_B_ID, PASSWORD)
        yield Driver(port, module_family(family), creds, settings), sim


def start_simulator(
    tmp_path: Path, *args: str, env: dict[str, str] | None = None
) -> tuple[subprocess.Popen, str]:
    proc = subprocess.Popen(
        [sys.executable, "-m", "edge.simulator", *args],
        cwd=REPO,
        stdout=subprocess.PIPE,
        stderr=(tmp_path / "simulator.log").open("ab"),
        text=True,
        env={**os.environ, "BROUTE_ID": ROUTE_B_ID, "BROUTE_PASSWORD": PASSWORD, **(env or {})},
    )
    assert proc.stdout is not None
    return proc, proc.stdout.readline().strip()


def edge_env(broker: SecureMosquittoServer, pty: str, outbox: Path) -> dict[str, str]:
    return {
        **os.environ,
        **broker.env_for("edge"),
        "EDGE_SERIAL_PORT": pty,
        "EDGE_MODULE": "bp35a1",
        "EDGE_POLL_SECONDS": "0.2",
        "EDGE_REQUEST_SPACING_SECONDS": "0.02",
        "EDGE_OUTBOX_PATH": str(outbox),
        "BROUTE_ID": ROUTE_B_ID,
        "BROUTE_PASSWORD": PASSWORD,
        "SOURCE_DEFAULT": "meter1",
        "MQTT_CLIENT_ID": "edge-e2e",
        "EDGE_LOG_LEVEL": "DEBUG",
    }


def start_edge(env: dict[str, str], log: Path) -> subprocess.Popen:
    return subprocess.Popen(
        [sys.executable, "-m", "edge"],
        cwd=REPO,
        env=env,
        stdout=log.open("ab"),
        stderr=subprocess.STDOUT,
    )


def kill_left_over(*procs: subprocess.Popen | None) -> None:
    """kill -9 what a failed test left running."""
    for proc in procs:
        if proc and proc.poll() is None:
            proc.kill()
            proc.wait(10)


def stored(outbox: Path) -> tuple[int, int]:
    """(readings pending, highest seq ever given) of an outbox another process writes."""
    with Outbox(outbox) as box:
        last = box._db.execute("SELECT seq FROM sqlite_sequence WHERE name='outbox'").fetchone()
        return box.pending(), last[0] if last else 0


def edge_status(outbox: Path) -> str:
    result = subprocess.run(
        [sys.executable, "-m", "edge", "status"],
        cwd=REPO,
        env={**os.environ, "EDGE_OUTBOX_PATH": str(outbox)},
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert result.returncode == 0, result.stderr
    return result.stdout
