"""A Wi-SUN module with a smart meter behind it, served on a pseudo-terminal.

`python -m edge.simulator` prints the path of the pty and serves until killed; the edge opens
that path as its serial port, unchanged. The module side speaks the SKSTACK IP dialogue (echo,
OK / FAIL ERxx, EVENT lines, EPANDESC on a scan, ERXUDP) in the BP35A1 or BP35C0 layout; it is
written from the command reference independently of `edge.skstack`, so the driver's parsing
is tested against a second reading of the manual, not against itself. The meter side answers
ECHONET Lite Get requests from a household load curve and a cumulative counter with a unit,
a coefficient and a rollover at 10**digits. Scripted faults reproduce what the field does.
"""

from __future__ import annotations

import argparse
import contextlib
import heapq
import itertools
import math
import os
import random
import select
import signal
import threading
import time
import tty
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime
from decimal import Decimal
from zoneinfo import ZoneInfo

from edge import echonet as el

METER_MAC = "001D129012345678"
METER_IP = "FE80:0000:0000:0000:021D:1290:1234:5678"  # SKLL64 of METER_MAC (U/L bit flipped)
OWN_IP = "FE80:0000:0000:0000:021D:1290:0003:C890"
PAN_ID = 0x8888
CHANNEL = 0x21
METER_TZ = ZoneInfo("Asia/Tokyo")  # Japanese meters keep Japan Standard Time
STEP_S = 0.02  # delay between the lines of a multi-line answer, like a real UART burst


@dataclass
class Faults:
    join_failures: int = 0  # the first N SKJOINs end in EVENT 24
    session_drop_after: int | None = None  # EVENT 29 once, after N answered Gets
    silent: bool = False  # the module answers nothing at all (unplugged, wrong baud rate)
    garbage_every: int = 0  # a line of noise before every Nth line sent
    unanswered: int = 0  # the next N Gets are sent over the air but the meter never answers
    scan_min_duration: int = 0  # scans shorter than this find no beacon


@dataclass
class SimulatedMeter:
    """A household's low-voltage meter: load curve in, cumulative counter out."""

    coefficient: int = 1
    unit_kwh: Decimal = Decimal("0.1")
    digits: int = 6
    start_raw: int = 12_345
    time_scale: float = 1.0  # >1 runs the counter faster than real time (rollover tests)
    seed: int = 0
    clock: Callable[[], float] = time.time
    export_raw: int = 0

    def __post_init__(self) -> None:
        self._rng = random.Random(self.seed)
        self._kwh_per_count = float(self.coefficient * self.unit_kwh)
        self._energy_kwh = self.start_raw * self._kwh_per_count
        self._last = self.clock()

    def power_w(self, now: float) -> int:
        """Base load, a morning and a larger evening peak (meter local time), and noise."""
        local = datetime.fromtimestamp(now, METER_TZ)
        hour = local.hour + local.minute / 60

        def bump(center: float, width: float, height: float) -> float:
            return height * math.exp(-(((hour - center) / width) ** 2))

        load = 250 + bump(7.0, 1.0, 900) + bump(19.5, 2.0, 1600) + self._rng.uniform(-40, 40)
        return max(0, round(load))

    def raw_counter(self, now: float) -> int:
        elapsed = max(0.0, now - self._last) * self.time_scale
        self._energy_kwh += self.power_w(now) * elapsed / 3_600_000
        self._last = now
        return int(self._energy_kwh / self._kwh_per_count) % 10**self.digits

    def property(self, epc: int, now: float) -> bytes | None:
        if epc == el.EPC_INSTANT_POWER:
            return el.encode_instant_power(self.power_w(now))
        if epc == el.EPC_ENERGY_NORMAL:
            return el.encode_u32(self.raw_counter(now))
        if epc == el.EPC_ENERGY_REVERSE:
            return el.encode_u32(self.export_raw)
        if epc == el.EPC_UNIT:
            return el.encode_unit(self.unit_kwh)
        if epc == el.EPC_COEFFICIENT:
            return el.encode_u32(self.coefficient)
        if epc == el.EPC_DIGITS:
            return bytes((self.digits,))
        if epc == 0x80:  # operation status: on
            return b"\x30"
        return None

    def answer(self, request: el.Frame, now: float) -> el.Frame | None:
        """Get_Res, or Get_SNA when some property is unknown; None for anything but a Get."""
        if request.esv != el.GET or request.deoj != el.SMART_METER:
            return None
        values = [(epc, self.property(epc, now)) for epc, _ in request.properties]
        esv = el.GET_RES if all(v is not None for _, v in values) else el.GET_SNA
        props = tuple((epc, v or b"") for epc, v in values)
        return el.Frame(request.tid, el.SMART_METER, request.seoj, esv, props)


@dataclass
class ModuleSim:
    """The SKSTACK IP side: bytes in from the driver, timed lines out."""

    meter: SimulatedMeter
    family: str = "bp35a1"
    faults: Faults = field(default_factory=Faults)
    expected_id: str | None = None  # when set, SKJOIN fails unless SKSETRBID/SKSETPWD match
    expected_password: str | None = None
    clock: Callable[[], float] = time.monotonic

    def __post_init__(self) -> None:
        self._input = b""
        self._out: list[tuple[float, int, bytes]] = []
        self._order = itertools.count()
        self._lines_sent = 0
        self.hex_mode = self.family != "bp35a1"  # the BP35A1 ships in binary mode
        self.joined = False
        self.joins = 0
        self.answered = 0
        self.password: str | None = None
        self.route_b_id: str | None = None
        self.commands: list[str] = []  # what the driver sent, for tests

    # Output ----------------------------------------------------------------------------

    @property
    def _side(self) -> str:
        return " 0" if self.family == "bp35c0" else ""

    def _emit(self, line: bytes | str, delay: float = 0.0) -> None:
        data = line.encode() if isinstance(line, str) else line
        heapq.heappush(self._out, (self.clock() + delay, next(self._order), data + b"\r\n"))

    def _event(self, code: int, sender: str, param: str | None = None, delay: float = 0.0) -> None:
        tail = f" {param}" if param is not None else ""
        self._emit(f"EVENT {code:02X} {sender}{self._side}{tail}", delay)

    def _erxudp(self, rport: int, data: bytes, secured: bool, delay: float) -> None:
        fields = (
            f"{METER_IP} {OWN_IP} {rport:04X} {rport:04X} {METER_MAC} {int(secured)}{self._side}"
        )
        head = f"ERXUDP {fields} {len(data):04X} "
        self._emit(head + data.hex().upper() if self.hex_mode else head.encode() + data, delay)

    def take_output(self) -> bytes:
        """Everything whose time has come, with the scripted noise mixed in."""
        now, out = self.clock(), b""
        while self._out and self._out[0][0] <= now:
            data = heapq.heappop(self._out)[2]
            self._lines_sent += 1
            if self.faults.garbage_every and self._lines_sent % self.faults.garbage_every == 0:
                out += b"\x00\xfe~~ERX#@!\r\n"
            out += data
        return b"" if self.faults.silent else out

    def next_due(self) -> float | None:
        return self._out[0][0] if self._out else None

    # Input -----------------------------------------------------------------------------

    def feed(self, data: bytes) -> None:
        self._input += data
        while (command := self._take_command()) is not None:
            self._dispatch(*command)

    def _take_command(self) -> tuple[str, bytes] | None:
        if self._input.startswith(b"SKSENDTO "):
            return self._take_sendto()
        line, sep, rest = self._input.partition(b"\r\n")
        if not sep:
            return None
        self._input = rest
        return line.decode("ascii", errors="replace"), b""

    def _take_sendto(self) -> tuple[str, bytes] | None:
        """SKSENDTO's header, then exactly DATALEN bytes of binary data, with no CRLF."""
        args = 6 if self.family == "bp35c0" else 5
        parts = self._input.split(b" ", args + 1)
        if len(parts) < args + 2:
            return None
        try:
            length = int(parts[args], 16)
        except ValueError:
            self._input = b""
            return "SKSENDTO", b""
        data = parts[args + 1]
        if len(data) < length:
            return None
        header = b" ".join(parts[: args + 1]).decode("ascii", errors="replace")
        self._input = data[length:].lstrip(b"\r\n")
        return header, data[:length]

    def _dispatch(self, line: str, data: bytes) -> None:
        if not line:
            return
        self.commands.append(line)
        self._emit(line + (" " if data else ""))  # the echo (SKSENDTO's data is not echoed)
        name, *args = line.split()
        handler = getattr(self, f"_cmd_{name.lower()}", None)
        try:
            ok = handler(args, data) if handler else "FAIL ER04"
        except (ValueError, IndexError):
            ok = "FAIL ER06"
        if ok is not None:
            self._emit(ok)

    # Commands (each returns the final OK / FAIL line, or None when it prints its own) ---

    def _cmd_skreset(self, args: list[str], data: bytes) -> str:
        self.joined = False
        return "OK"

    def _cmd_skver(self, args: list[str], data: bytes) -> str:
        self._emit("EVER 1.5.2")
        return "OK"

    def _cmd_sksetpwd(self, args: list[str], data: bytes) -> str:
        length, password = int(args[0], 16), args[1]
        if len(password) != length:
            return "FAIL ER06"
        self.password = password
        return "OK"

    def _cmd_sksetrbid(self, args: list[str], data: bytes) -> str:
        if len(args[0]) != 32:
            return "FAIL ER06"
        self.route_b_id = args[0]
        return "OK"

    def _cmd_ropt(self, args: list[str], data: bytes) -> str:
        return f"OK {int(self.hex_mode):02d}"

    def _cmd_wopt(self, args: list[str], data: bytes) -> str:
        self.hex_mode = args[0] == "01"
        return "OK"

    def _cmd_sksreg(self, args: list[str], data: bytes) -> str:
        int(args[1], 16)
        return "OK"

    def _cmd_skscan(self, args: list[str], data: bytes) -> str:
        duration = int(args[2])
        scan_time = 0.05 + 0.005 * duration
        if duration >= self.faults.scan_min_duration:
            self._event(0x20, METER_IP, delay=scan_time)
            block = [
                "EPANDESC",
                f"  Channel:{CHANNEL:02X}",
                "  Channel Page:09",
                f"  Pan ID:{PAN_ID:04X}",
                f"  Addr:{METER_MAC}",
                "  LQI:E1",
                f"  PairID:{(self.route_b_id or '0' * 32)[-8:]}",
            ]
            for i, text in enumerate(block, 1):
                self._emit(text, scan_time + i * 0.001)
        self._event(0x22, OWN_IP, delay=scan_time + 0.01)
        return "OK"

    def _cmd_skll64(self, args: list[str], data: bytes) -> None:
        mac = args[0]
        if len(mac) != 16:
            self._emit("FAIL ER06")
            return
        groups = [f"{int(mac[0:2], 16) ^ 0x02:02X}{mac[2:4]}"] + [
            mac[i : i + 4] for i in range(4, 16, 4)
        ]
        self._emit("FE80:0000:0000:0000:" + ":".join(groups))

    def _cmd_skjoin(self, args: list[str], data: bytes) -> str:
        self.joins += 1
        fail = self.joins <= self.faults.join_failures or not self._credentials_match()
        pana = bytes.fromhex("0000001000000000000000000000000000")
        self._event(0x21, METER_IP, "02", STEP_S)
        self._event(0x02, OWN_IP, delay=2 * STEP_S)
        self._erxudp(0x02CC, pana, secured=False, delay=3 * STEP_S)
        self._event(0x21, METER_IP, "00", 4 * STEP_S)
        self._event(0x24 if fail else 0x25, METER_IP, delay=5 * STEP_S)
        self.joined = not fail
        if not fail:  # a meter announces its instances right after a join
            notice = el.Frame(
                1, el.NODE_PROFILE, el.NODE_PROFILE, el.INF, ((0xD5, b"\x01\x02\x88\x01"),)
            )
            self._erxudp(el.UDP_PORT, el.encode_frame(notice), True, 6 * STEP_S)
        return "OK"

    def _credentials_match(self) -> bool:
        return (self.expected_id is None or self.route_b_id == self.expected_id) and (
            self.expected_password is None or self.password == self.expected_password
        )

    def _cmd_sksendto(self, args: list[str], data: bytes) -> None:
        if len(data) != int(args[-1], 16):
            self._emit("FAIL ER06")
            return
        self._event(0x21, METER_IP, "00" if self.joined else "01", STEP_S)
        self._emit("OK", 1.5 * STEP_S)
        if self.joined:
            self._meter_answer(data)

    def _meter_answer(self, data: bytes) -> None:
        try:
            request = el.decode_frame(data)
        except el.EchonetError:
            return
        if self.faults.unanswered > 0:
            self.faults.unanswered -= 1
            return
        answer = self.meter.answer(request, self.meter.clock())
        if answer is None:
            return
        self._erxudp(el.UDP_PORT, el.encode_frame(answer), True, 3 * STEP_S)
        self.answered += 1
        if (
            self.faults.session_drop_after is not None
            and self.answered >= self.faults.session_drop_after
        ):
            self.faults.session_drop_after = None
            self.joined = False
            self._event(0x29, METER_IP, delay=4 * STEP_S)


class PtyServer:
    """Serves a ModuleSim on a new pseudo-terminal until stopped; `path` is its device."""

    def __init__(self, sim: ModuleSim) -> None:
        self.sim = sim
        self._master, self._slave = os.openpty()
        tty.setraw(self._slave)  # no echo, no CRLF translation: bytes pass as they are
        self.path = os.ttyname(self._slave)
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self.serve, name="module-sim", daemon=True)

    def start(self) -> PtyServer:
        self._thread.start()
        return self

    def serve(self) -> None:
        while not self._stop.is_set():
            due = self.sim.next_due()
            wait = 0.05 if due is None else min(0.05, max(0.0, due - self.sim.clock()))
            readable, _, _ = select.select([self._master], [], [], wait)
            if readable:
                try:
                    self.sim.feed(os.read(self._master, 4096))
                except OSError:  # the driver closed the port: keep serving the next one
                    time.sleep(0.05)
            output = self.sim.take_output()
            if output:
                os.write(self._master, output)

    def request_stop(self) -> None:
        self._stop.set()

    def stop(self) -> None:
        self.request_stop()
        if self._thread.is_alive():
            self._thread.join(timeout=2)
        os.close(self._master)
        os.close(self._slave)

    def __enter__(self) -> PtyServer:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()


def _parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="python -m edge.simulator", description=__doc__.split("\n")[0])
    p.add_argument("--module", choices=("bp35a1", "bp35c0"), default="bp35a1")
    p.add_argument("--unit", default="0.1", help="kWh per count, one of the 0xE1 codes")
    p.add_argument("--coefficient", type=int, default=1)
    p.add_argument("--digits", type=int, default=6, help="the counter wraps at 10**digits")
    p.add_argument("--start-raw", type=int, default=12_345, help="counter at start")
    p.add_argument("--time-scale", type=float, default=1.0, help="energy runs this much faster")
    p.add_argument("--join-failures", type=int, default=0)
    p.add_argument("--session-drop-after", type=int, default=None)
    p.add_argument("--garbage-every", type=int, default=0)
    p.add_argument("--unanswered", type=int, default=0)
    p.add_argument("--silent", action="store_true")
    p.add_argument(
        "--check-credentials",
        action="store_true",
        help="fail joins unless the module got BROUTE_ID/BROUTE_PASSWORD from this environment",
    )
    return p.parse_args(argv)


def main(argv: list[str] | None = None) -> None:
    args = _parse_args(argv)
    meter = SimulatedMeter(
        coefficient=args.coefficient,
        unit_kwh=Decimal(args.unit),
        digits=args.digits,
        start_raw=args.start_raw,
        time_scale=args.time_scale,
    )
    faults = Faults(
        join_failures=args.join_failures,
        session_drop_after=args.session_drop_after,
        silent=args.silent,
        garbage_every=args.garbage_every,
        unanswered=args.unanswered,
    )
    sim = ModuleSim(meter, args.module, faults)
    if args.check_credentials:
        sim.expected_id = os.environ.get("BROUTE_ID")
        sim.expected_password = os.environ.get("BROUTE_PASSWORD")
    server = PtyServer(sim)
    signal.signal(signal.SIGTERM, lambda *_: server.request_stop())
    print(server.path, flush=True)
    with contextlib.suppress(KeyboardInterrupt):
        server.serve()


if __name__ == "__main__":
    main()
