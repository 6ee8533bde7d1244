"""A Wi-SUN module with a smart meter behind it, served on a pseudo-terminal.

`python -m edge.simulator` prints the path of the pty and serves until killed; the edge opens
that path as its serial port, unchanged. The module side speaks the SKSTACK IP dialogue (echo,
OK / FAIL ERxx, EVENT lines, EPANDESC on a scan, ERXUDP) in the BP35A1 layout, or with the SIDE
column of the BP35C0 and the dual-stack dongles (RL7023 Stick-D/DSS, RS-WSUHA-P: hex only, no
ROPT/WOPT); it is written from the command reference independently of `edge.skstack`, so the
driver's parsing is tested against a second reading of the manual, not against itself. The
meter side answers ECHONET Lite Get and SetC requests from a household load curve and a
cumulative counter with a unit, a coefficient and a rollover at 10**digits, keeps 45 days of
half-hour registers (0xE5/0xE2/0xE4, 0xED/0xEC) and pushes 0xEA/0xEB on every half hour.
Scripted faults (and random line garbling) reproduce what the field does. `VirtualPort` serves
the same simulator to a driver on a virtual clock instead of a pty.
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
from datetime import datetime, timedelta
from decimal import Decimal
from zoneinfo import ZoneInfo

from contracts.settings import Environment
from edge import echonet as el
from edge.credentials import Credentials

METER_MAC = "001D129012345678"
METER_IP = "FE80:0000:0000:0000:021D:1290:1234:5678"  # SKLL64 of METER_MAC (U/L bit flipped)
OWN_IP = "FE80:0000:0000:0000:021D:1290:0003:C890"
PAN_ID = 0x8888
CHANNEL = 0x21
METER_TZ = ZoneInfo("Asia/Tokyo")  # Japanese meters keep Japan Standard Time
STEP_S = 0.02  # delay between the lines of a multi-line answer, like a real UART burst
# Module families: which print a SIDE column, and which have no ROPT/WOPT (always hex).
FAMILIES = ("bp35a1", "bp35c0", "rl7023", "rs-wsuha-p")
SIDE_FAMILIES = frozenset({"bp35c0", "rl7023", "rs-wsuha-p"})
HEX_ONLY_FAMILIES = frozenset({"rl7023", "rs-wsuha-p"})


@dataclass
class Faults:
    join_failures: int = 0  # the first N SKJOINs end in EVENT 24
    session_drop_after: int | None = None  # EVENT 29 once, after N answered Gets
    silent: bool = False  # the module answers nothing at all (unplugged, wrong baud rate)
    garbage_every: int = 0  # a line of noise before every Nth line sent
    unanswered: int = 0  # the next N Gets are sent over the air but the meter never answers
    scan_min_duration: int = 0  # scans shorter than this find no beacon
    garble_rate: float = 0.0  # this share of lines is cut, gets noise, or a non-hex character
    seed: int = 0


HALF_HOUR_S = 1800
JST_OFFSET_S = 9 * 3600  # Japan has no daylight saving time: the load curve uses this offset


def minute_noise(minute: int, seed: int) -> float:
    """-40..40 W, a fixed function of the minute's number (a multiplicative hash)."""
    return ((minute * 2_654_435_761 + seed * 40_503) % 2**32) / 2**32 * 80 - 40


@dataclass
class SimulatedMeter:
    """A household's low-voltage meter: load curve in; counter, registers and pushes out.

    Power is constant within each minute (a morning and a larger evening peak plus noise that
    is a fixed function of the minute), so the energy between any two instants is an exact
    sum: the live counter, the half-hour registers of the last `history_days` days (0xE2/0xE4
    with 0xE5, 0xEC with 0xED) and the 0xEA/0xEB pushes all agree, whatever the clock does
    (a test moves it days ahead to fake a downtime). The counter wraps at 10**digits, in its
    memory too.
    """

    coefficient: int = 1
    unit_kwh: Decimal = Decimal("0.1")
    digits: int = 6
    start_raw: int = 12_345
    time_scale: float = 1.0  # >1 runs the counter faster than real time (rollover tests)
    seed: int = 0
    clock: Callable[[], float] = time.time
    export_raw: int = 0
    history_days: int = 45
    history2: bool = True  # answers 0xED/0xEC and lists them in its 0x9F map (not all do)

    def __post_init__(self) -> None:
        self._kwh_per_count = float(self.coefficient * self.unit_kwh)
        now = self.clock()
        self._first_minute = int(now // 60) - (self.history_days + 2) * 1440
        self._sums = [0.0]  # kWh from the first minute to the start of minute first + i
        self._offset = self.start_raw * self._kwh_per_count - self.energy_kwh(now, anchored=False)
        self.history_day = 0  # 0xE5
        self.history2_request: tuple[datetime, int] | None = None  # 0xED

    def power_w(self, now: float) -> int:
        minute = int(now // 60)
        hour = ((minute * 60 + JST_OFFSET_S) % 86_400) / 3600

        def bump(center: float, width: float, height: float) -> float:
            return height * math.exp(-(((hour - center) / width) ** 2))

        load = 250 + bump(7.0, 1.0, 900) + bump(19.5, 2.0, 1600) + minute_noise(minute, self.seed)
        return max(0, round(load))

    def energy_kwh(self, now: float, anchored: bool = True) -> float:
        """The meter's true energy at `now` (kWh, never wrapped): what the tests compare to."""
        minute = int(now // 60)
        index = minute - self._first_minute
        if index < 0:
            return self._offset if anchored else 0.0
        while len(self._sums) <= index:
            m = self._first_minute + len(self._sums) - 1
            self._sums.append(self._sums[-1] + self.power_w(m * 60) * 60 / 3_600_000)
        partial = self.power_w(now) * (now - minute * 60) / 3_600_000
        energy = (self._sums[index] + partial) * self.time_scale
        return energy + (self._offset if anchored else 0.0)

    def raw_counter(self, now: float) -> int:
        return int(self.energy_kwh(now) / self._kwh_per_count) % 10**self.digits

    def register(self, boundary: float, now: float) -> int | None:
        """The counter the meter kept at a half-hour boundary; None if not kept (or to come)."""
        if boundary > now or boundary < now - (self.history_days + 1) * 86_400:
            return None
        return self.raw_counter(boundary)

    def export_register(self, boundary: float, now: float) -> int | None:
        return None if self.register(boundary, now) is None else self.export_raw

    def _day_boundaries(self, day_offset: int, now: float) -> list[float]:
        day = datetime.fromtimestamp(now, METER_TZ).date() - timedelta(days=day_offset)
        midnight = datetime.combine(day, datetime.min.time(), METER_TZ).timestamp()
        return [midnight + i * HALF_HOUR_S for i in range(el.SLOTS_PER_DAY)]

    def _history2(self, now: float) -> bytes | None:
        if self.history2_request is None:
            return None
        newest, points = self.history2_request
        at = newest.replace(tzinfo=METER_TZ).timestamp()
        pairs = [
            (self.register(b, now), self.export_register(b, now))
            for b in (at - i * HALF_HOUR_S for i in range(points))
        ]
        return el.encode_history2(newest, pairs)

    def fixed_time(self, now: float) -> tuple[bytes, bytes]:
        """0xEA and 0xEB: the latest half-hour boundary and its registers."""
        boundary = now // HALF_HOUR_S * HALF_HOUR_S
        when = datetime.fromtimestamp(boundary, METER_TZ).replace(tzinfo=None)
        raw = self.register(boundary, now)
        return (
            el.encode_fixed_time(when, raw if raw is not None else el.NO_DATA_UNSIGNED),
            el.encode_fixed_time(when, self.export_raw),
        )

    def supported(self) -> frozenset[int]:
        epcs = {0x80, 0x97, 0x98, 0x9F, 0xD3, 0xD7, 0xE0, 0xE1, 0xE2, 0xE3, 0xE4, 0xE5, 0xE7}
        epcs |= {0xEA, 0xEB}
        return frozenset(epcs | ({0xEC, 0xED} if self.history2 else set()))

    def property(self, epc: int, now: float) -> bytes | None:
        local = datetime.fromtimestamp(now, METER_TZ)
        values: dict[int, Callable[[], bytes | None]] = {
            el.EPC_INSTANT_POWER: lambda: el.encode_instant_power(self.power_w(now)),
            el.EPC_ENERGY_NORMAL: lambda: el.encode_u32(self.raw_counter(now)),
            el.EPC_ENERGY_REVERSE: lambda: el.encode_u32(self.export_raw),
            el.EPC_UNIT: lambda: el.encode_unit(self.unit_kwh),
            el.EPC_COEFFICIENT: lambda: el.encode_u32(self.coefficient),
            el.EPC_DIGITS: lambda: bytes((self.digits,)),
            0x80: lambda: b"\x30",  # operation status: on
            el.EPC_CURRENT_TIME: lambda: bytes((local.hour, local.minute)),
            el.EPC_CURRENT_DATE: lambda: el.encode_current_date(local.date()),
            el.EPC_GET_MAP: lambda: el.encode_property_map(self.supported()),
            el.EPC_HISTORY_DAY: lambda: bytes((self.history_day,)),
            el.EPC_HISTORY_NORMAL: lambda: el.encode_history(
                self.history_day,
                [self.register(b, now) for b in self._day_boundaries(self.history_day, now)],
            ),
            el.EPC_HISTORY_REVERSE: lambda: el.encode_history(
                self.history_day,
                [self.export_register(b, now) for b in self._day_boundaries(self.history_day, now)],
            ),
            el.EPC_FIXED_TIME_NORMAL: lambda: self.fixed_time(now)[0],
            el.EPC_FIXED_TIME_REVERSE: lambda: self.fixed_time(now)[1],
        }
        if epc not in self.supported():
            return None
        if epc == el.EPC_HISTORY2:
            return self._history2(now)
        if epc == el.EPC_HISTORY2_TIME:
            request = self.history2_request
            return el.encode_history2_time(*request) if request else None
        return values[epc]()

    def set_property(self, epc: int, edt: bytes) -> bool:
        """SetC: 0xE5 (day to read) and 0xED (time point and count); False if refused."""
        try:
            if epc == el.EPC_HISTORY_DAY and len(edt) == 1 and edt[0] <= el.HISTORY_DAYS_MAX:
                self.history_day = edt[0]
                return True
            if epc == el.EPC_HISTORY2_TIME and self.history2:
                newest, points = el.decode_history2_time(edt)
                if newest.minute % 30 == 0 and 1 <= points <= el.HISTORY2_POINTS_MAX:
                    self.history2_request = (newest, points)
                    return True
        except el.EchonetError:
            pass
        return False

    def answer(self, request: el.Frame, now: float) -> el.Frame | None:
        """Get_Res / Get_SNA, Set_Res / SetC_SNA; None for anything else."""
        if request.deoj != el.SMART_METER:
            return None
        if request.esv == el.SETC:
            done = [(epc, edt, self.set_property(epc, edt)) for epc, edt in request.properties]
            esv = el.SET_RES if all(ok for *_, ok in done) else el.SETC_SNA
            props = tuple((epc, b"" if ok else edt) for epc, edt, ok in done)
            return el.Frame(request.tid, el.SMART_METER, request.seoj, esv, props)
        if request.esv != el.GET:
            return None
        values = [(epc, self.property(epc, now)) for epc, _ in request.properties]
        esv = el.GET_RES if all(v is not None for _, v in values) else el.GET_SNA
        props = tuple((epc, v or b"") for epc, v in values)
        return el.Frame(request.tid, el.SMART_METER, request.seoj, esv, props)

    def push(self, now: float) -> el.Frame:
        """The INF a meter sends on every half hour: 0xEA and 0xEB of the boundary just passed."""
        normal, reverse = self.fixed_time(now)
        props = ((el.EPC_FIXED_TIME_NORMAL, normal), (el.EPC_FIXED_TIME_REVERSE, reverse))
        return el.Frame(0, el.SMART_METER, el.CONTROLLER, el.INF, props)


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
        self._out: list[tuple[float, int, bytes, object]] = []
        self._order = itertools.count()
        self._lines_sent = 0
        self._rng = random.Random(self.faults.seed)
        # ROHM modules ship in binary mode (the driver must switch them); the dongles print hex.
        self.hex_mode = self.family in HEX_ONLY_FAMILIES
        self._pushed_boundary = 0.0  # the last half-hour boundary whose INF went out
        self.garbled = 0
        self.intact: list[object] = []  # tags of tagged lines that went out ungarbled
        self.joined = False
        self.joins = 0
        self.answered = 0
        self.password: str | None = None
        self.route_b_id: str | None = None
        self.commands: list[str] = []  # what the driver sent, for tests

    # Output ----------------------------------------------------------------------------

    @property
    def _side(self) -> str:
        return " 0" if self.family in SIDE_FAMILIES else ""

    def _emit(self, line: bytes | str, delay: float = 0.0, tag: object = None) -> None:
        data = line.encode() if isinstance(line, str) else line
        heapq.heappush(self._out, (self.clock() + delay, next(self._order), data + b"\r\n", tag))

    def _event(self, code: int, sender: str, param: str | None = None, delay: float = 0.0) -> None:
        tail = f" {param}" if param is not None else ""
        self._emit(f"EVENT {code:02X} {sender}{self._side}{tail}", delay)

    def _erxudp(
        self, rport: int, data: bytes, secured: bool, delay: float, tag: object = None
    ) -> None:
        fields = (
            f"{METER_IP} {OWN_IP} {rport:04X} {rport:04X} {METER_MAC} {int(secured)}{self._side}"
        )
        head = f"ERXUDP {fields} {len(data):04X} "
        line = head + data.hex().upper() if self.hex_mode else head.encode() + data
        self._emit(line, delay, tag)

    def take_output(self) -> bytes:
        """Everything whose time has come, with the scripted noise mixed in."""
        self._push_if_due()
        now, out = self.clock(), b""
        while self._out and self._out[0][0] <= now:
            _, _, data, tag = heapq.heappop(self._out)
            self._lines_sent += 1
            if self.faults.garbage_every and self._lines_sent % self.faults.garbage_every == 0:
                out += b"\x00\xfe~~ERX#@!\r\n"
            if self.faults.garble_rate and self._rng.random() < self.faults.garble_rate:
                data = self._garble(data)
            elif tag is not None:
                self.intact.append(tag)
            out += data
        return b"" if self.faults.silent else out

    def _garble(self, line: bytes) -> bytes:
        """Line noise a driver can notice: a cut line, stray bytes, a non-hex character."""
        self.garbled += 1
        body = line[:-2]
        at = self._rng.randrange(max(1, len(body)))
        kind = self._rng.choice(("cut", "noise", "char"))
        if kind == "cut":
            body = body[:at]
        elif kind == "noise":
            body = body[:at] + b"\x00\xfe\x13" + body[at:]
        else:
            body = body[:at] + b"Z" + body[at + 1 :]
        return body + b"\r\n"

    def _push_if_due(self, delay: float = 0.0) -> None:
        """The meter's INF of 0xEA/0xEB once per half-hour boundary, while a session is up."""
        now = self.meter.clock()
        boundary = now // HALF_HOUR_S * HALF_HOUR_S
        if not self.joined or boundary <= self._pushed_boundary:
            return
        self._pushed_boundary = boundary
        frame = el.encode_frame(self.meter.push(now))
        self._erxudp(el.UDP_PORT, frame, True, delay, ("push", boundary))

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
        args = 6 if self.family in SIDE_FAMILIES else 5
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
        if self.family in HEX_ONLY_FAMILIES:
            return "FAIL ER04"
        return f"OK {int(self.hex_mode):02X}"

    def _cmd_wopt(self, args: list[str], data: bytes) -> str:
        if self.family in HEX_ONLY_FAMILIES:
            return "FAIL ER04"
        self.hex_mode = bool(int(args[0], 16) & 1)
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
        self._pushed_boundary = self.meter.clock() // HALF_HOUR_S * HALF_HOUR_S
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
        self._push_if_due(1.2 * STEP_S)  # a push may come between the EVENT 21 and the OK
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
        tag = ("answer", request.tid, answer.esv)
        self._erxudp(el.UDP_PORT, el.encode_frame(answer), True, 3 * STEP_S, tag)
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


class VirtualClock:
    """Seconds since the epoch that move only when something sleeps (tests, the benchmark)."""

    def __init__(self, start: float) -> None:
        self.now = start

    def time(self) -> float:
        return self.now

    def sleep(self, seconds: float) -> None:
        self.now += max(0.0, seconds)


class VirtualPort:
    """A ModuleSim as the driver's serial port on a VirtualClock, without a pty or threads.

    A read with nothing to give moves the clock to the simulator's next line (at most `tick`
    ahead), so days of polling at realistic request pacing run in seconds.
    """

    def __init__(self, sim: ModuleSim, clock: VirtualClock, tick: float = 0.05) -> None:
        self.sim, self.clock, self.tick = sim, clock, tick
        self._pending = b""

    def write(self, data: bytes) -> int:
        self.sim.feed(data)
        return len(data)

    @property
    def in_waiting(self) -> int:
        return len(self._pending)

    def read(self, size: int = 1) -> bytes:
        if not self._pending:
            self._pending = self.sim.take_output()
        if not self._pending:
            due = self.sim.next_due()
            step = self.tick if due is None else min(self.tick, max(due - self.clock.now, 1e-4))
            self.clock.sleep(step)
            self._pending = self.sim.take_output()
        out, self._pending = self._pending[:size], self._pending[size:]
        return out


def _parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="python -m edge.simulator", description=__doc__.split("\n")[0])
    p.add_argument("--module", choices=FAMILIES, default="bp35a1")
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
    p.add_argument("--garble-rate", type=float, default=0.0, help="share of lines garbled")
    p.add_argument("--history-days", type=int, default=45, help="days of half-hour registers")
    p.add_argument("--no-history2", action="store_true", help="a meter without 0xEC/0xED")
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
        history_days=args.history_days,
        history2=not args.no_history2,
    )
    faults = Faults(
        join_failures=args.join_failures,
        session_drop_after=args.session_drop_after,
        silent=args.silent,
        garbage_every=args.garbage_every,
        unanswered=args.unanswered,
        garble_rate=args.garble_rate,
    )
    sim = ModuleSim(meter, args.module, faults)
    if args.check_credentials:
        expected = Credentials.from_env(Environment())  # the edge's own variables
        sim.expected_id, sim.expected_password = expected.route_b_id, expected.password
    server = PtyServer(sim)
    signal.signal(signal.SIGTERM, lambda *_: server.request_stop())
    print(server.path, flush=True)
    with contextlib.suppress(KeyboardInterrupt):
        server.serve()


if __name__ == "__main__":
    main()
