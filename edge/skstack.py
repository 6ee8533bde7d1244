"""SKSTACK IP driver for Wi-SUN B-route modules on a serial port.

Modules: ROHM BP35A1 and BP35C0/C2, and the dual-stack dongles that print a SIDE column
(Tessera RL7023 Stick-D/DSS, RATOC RS-WSUHA-P); docs/edge.md shows each one's line formats.

The module speaks CRLF-terminated text: commands with an echo and OK / FAIL ERxx, and
asynchronous lines (EVENT nn, EPANDESC blocks, ERXUDP packets). Parsing a line is a pure
function; the `Driver` is the only place that reads or writes the port, and every wait in it
has a deadline. What differs between module families lives in one `ModuleFamily` subclass
each, so the driver has no `if module == ...`. A line the driver cannot parse (noise, a cut
EVENT line, a garbled hex field) is logged and counted in `Driver.unparsed`, never raised;
ECHONET notifications that arrive during any wait (a command's OK among them) are kept.

Secrets: SKSETPWD and SKSETRBID carry the B-route password and ID; `redact` is applied to
every line the driver logs, in both directions (the module echoes commands back).
"""

from __future__ import annotations

import logging
import re
import time
from collections import Counter, deque
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Protocol

from edge import echonet
from edge.credentials import Credentials

log = logging.getLogger(__name__)

# Events (SKSTACK IP command reference, "EVENT")
EV_UDP_SENT = 0x21
EV_SCAN_DONE = 0x22
EV_PANA_FAILED = 0x24
EV_PANA_OK = 0x25
EV_SESSION_ENDED = frozenset({0x24, 0x26, 0x27, 0x28, 0x29})  # failed, closed, expired
# The B-route uses channels 33..60: the channel mask selects all of them.
CHANNEL_MASK = "FFFFFFFF"
CHANNELS = 28

_IPV6 = re.compile(r"[0-9A-F]{4}(:[0-9A-F]{4}){7}")
_PANDESC_FIELD = re.compile(r"([A-Za-z][A-Za-z ]*):([0-9A-Fa-f]+)")
# Lines a module prints that the driver reads as they are (the rest are parsed or counted).
_KNOWN_LINE = re.compile(
    r"OK( .*)?|FAIL .*|EPANDESC|EVER .*|SK[A-Z0-9]+( .*)?|[RW]OPT( .*)?|"
    r"[0-9A-F]{4}(:[0-9A-F]{4}){7}|\s*[A-Za-z][A-Za-z ]*:[0-9A-Fa-f]+"
)
_SECRET_COMMANDS = re.compile(r"^(SKSETPWD \S+|SKSETRBID) .*$")


def redact(line: str) -> str:
    """The line with the B-route password or ID replaced by ***."""
    return _SECRET_COMMANDS.sub(r"\1 ***", line)


class SkstackError(RuntimeError):
    """The module did not do what was asked (FAIL, a timeout, a failed join)."""


class ModuleTimeout(SkstackError):
    pass


class CommandFailed(SkstackError):
    pass


class JoinFailed(SkstackError):
    pass


class SessionLost(SkstackError):
    """The PANA session ended (EVENT 24/26-29) or the meter stopped answering."""


class NoAnswer(SkstackError):
    """One request got no ECHONET answer in time (the session may still be fine)."""


# --- lines, parsed -----------------------------------------------------------------------


@dataclass(frozen=True)
class Event:
    code: int
    sender: str
    param: str | None = None


@dataclass(frozen=True)
class UdpPacket:
    sender: str
    dest: str
    rport: int
    lport: int
    sender_lla: str
    secured: bool
    data: bytes
    rssi: int | None = None  # dBm, on modules that print it (BP35C0 with SA2=1, some dongles)


@dataclass(frozen=True)
class PanDescriptor:
    channel: int
    pan_id: int
    addr: str  # 64-bit MAC address, 16 hex digits
    lqi: int = 0


def rssi_from_lqi(lqi: int) -> float:
    """ROHM's conversion of the EPANDESC LQI (0..255) to dBm."""
    return round(0.275 * lqi - 104.27, 1)


def parse_pan_descriptor(fields: dict[str, str]) -> PanDescriptor:
    """The `  Key:Value` lines of one EPANDESC block, as a PanDescriptor."""
    try:
        return PanDescriptor(
            channel=int(fields["Channel"], 16),
            pan_id=int(fields["Pan ID"], 16),
            addr=fields["Addr"],
            lqi=int(fields.get("LQI", "0"), 16),
        )
    except (KeyError, ValueError) as exc:
        raise SkstackError(f"EPANDESC incomplete or malformed: {exc}") from None


class ModuleFamily:
    """What differs between module families: argument lists and line layouts."""

    name = "generic"
    # Fields between SENDERLLA and DATALEN in ERXUDP; the last of each layout named here.
    erxudp_middle: tuple[tuple[str, ...], ...] = (("secured",),)
    event_has_side = False
    sendto_side = ""  # " 0" on modules with two MAC sides: the B-route is side 0

    def scan_command(self, duration: int) -> str:
        return f"SKSCAN 2 {CHANNEL_MASK} {duration}{self.sendto_side}"

    def sendto_header(self, ipaddr: str, port: int, length: int) -> str:
        """SKSENDTO up to the data: handle 1, encrypted (1), 4-hex-digit port and length."""
        return f"SKSENDTO 1 {ipaddr} {port:04X} 1{self.sendto_side} {length:04X} "

    def parse_event(self, line: str) -> Event:
        tokens = line.split()
        if len(tokens) < 3 or tokens[0] != "EVENT":
            raise SkstackError(f"not an EVENT line: {line[:60]!r}")
        rest = tokens[4:] if self.event_has_side else tokens[3:]
        return Event(int(tokens[1], 16), tokens[2], rest[0] if rest else None)

    def parse_erxudp(self, line: str) -> UdpPacket:
        """An ERXUDP line in hex data mode (the driver switches the module to it)."""
        tokens = line.split(" ")
        if tokens[0] != "ERXUDP" or len(tokens) < 8:
            raise SkstackError(f"not an ERXUDP line: {line[:60]!r}")
        sender, dest, rport, lport, lla = tokens[1:6]
        middle, (datalen, data) = tokens[6:-2], tokens[-2:]
        layout = next((m for m in self.erxudp_middle if len(m) == len(middle)), None)
        if layout is None:
            raise SkstackError(f"{self.name}: ERXUDP with {len(tokens)} fields: {line[:80]!r}")
        fields = dict(zip(layout, middle, strict=True))
        try:
            payload = bytes.fromhex(data)
            length = int(datalen, 16)
            ports = int(rport, 16), int(lport, 16)
            rssi = int(fields["rssi"], 16) - 256 if "rssi" in fields else None
        except ValueError:
            raise SkstackError(f"ERXUDP with non-hex fields: {line[:80]!r}") from None
        if len(payload) != length:
            raise SkstackError(f"ERXUDP DATALEN {length} but {len(payload)} bytes (binary mode?)")
        return UdpPacket(sender, dest, *ports, lla, fields["secured"] == "1", payload, rssi)

    def ensure_hex_output(self, driver: Driver) -> None:
        """Make ERXUDP carry its data as hex digits (binary data can contain CRLF).

        ROPT answers the option bits in hex; bit 0 is the ERXUDP data format (1 = hex).
        WOPT writes flash (a limited number of times): read first, write only if needed,
        keeping the other bits.
        """
        options = int(driver.command("ROPT").strip() or "0", 16)
        if not options & 1:
            log.info("%s: ERXUDP output is binary (ROPT %02X): setting hex", self.name, options)
            driver.command(f"WOPT {options | 1:02X}")


class BP35A1(ModuleFamily):
    """ROHM BP35A1: one MAC side; ERXUDP data is binary until WOPT 01 (stored in flash)."""

    name = "bp35a1"


class BP35C0(ModuleFamily):
    """ROHM BP35C0/BP35C2: dual MAC (side 0 = B-route); RSSI before SECURED when SA2=1;
    output mode checked with ROPT and set to hex with WOPT like the BP35A1."""

    name = "bp35c0"
    erxudp_middle = (("secured", "side"), ("rssi", "secured", "side"))
    event_has_side = True
    sendto_side = " 0"


class DualStackDongle(BP35C0):
    """Tessera RL7023 Stick-D/DSS, RATOC RS-WSUHA-P and similar dual-stack (B-route + HAN)
    USB dongles: the BP35C0's SIDE column in ERXUDP, EVENT, SKSCAN and SKSENDTO, but their
    firmware always prints ERXUDP data in hex and has no ROPT/WOPT (FAIL ER04). A binary line
    would still be caught: its DATALEN would not match its hex digits."""

    name = "dual-stack"

    def ensure_hex_output(self, driver: Driver) -> None:
        """Nothing to switch: these dongles print hex only."""


MODULES: dict[str, type[ModuleFamily]] = {
    "bp35a1": BP35A1,
    "bp35c0": BP35C0,
    "bp35c2": BP35C0,
    "rl7023": DualStackDongle,
    "rs-wsuha-p": DualStackDongle,
    "dual-stack": DualStackDongle,
}


def module_family(name: str) -> ModuleFamily:
    try:
        return MODULES[name.lower()]()
    except KeyError:
        raise ValueError(f"EDGE_MODULE {name!r}: expected one of {', '.join(MODULES)}") from None


# --- the driver --------------------------------------------------------------------------


class SerialPort(Protocol):
    """What the driver needs of a pyserial `Serial` (opened with a short read timeout)."""

    def write(self, data: bytes) -> int | None: ...
    def read(self, size: int = 1) -> bytes: ...

    @property
    def in_waiting(self) -> int: ...


@dataclass(frozen=True)
class Settings:
    command_timeout_s: float = 5.0
    join_timeout_s: float = 60.0  # PANA authentication over the air takes several seconds
    answer_timeout_s: float = 10.0
    request_spacing_s: float = 1.0  # the meter is slow and the radio duty-cycle limited
    scan_durations: tuple[int, ...] = (4, 5, 6, 7, 8)
    scan_retries: int = 2  # per duration
    scan_margin_s: float = 5.0
    join_attempts: int = 3
    join_backoff_s: float = 2.0
    quiet_after: int = 3  # unanswered requests in a row that mean the link is gone


@dataclass
class Driver:
    port: SerialPort
    module: ModuleFamily
    credentials: Credentials
    settings: Settings = field(default_factory=Settings)
    clock: Callable[[], float] = time.monotonic
    sleep: Callable[[float], None] = time.sleep

    def __post_init__(self) -> None:
        self._buffer = b""
        self._tid = 0
        self._last_send = float("-inf")
        self._unanswered = 0
        self.pan: PanDescriptor | None = None
        self.meter_ip: str | None = None
        self.joined = False
        # ECHONET notifications (INF/INFC) that arrived while waiting for something else.
        self.notifications: deque[echonet.Frame] = deque(maxlen=100)
        self.unparsed: Counter[str] = Counter()  # lines that could not be parsed, by kind
        self.rssi: int | None = None  # dBm of the last ERXUDP that carried one
        self.requests = 0  # ECHONET requests sent since start

    # Reading and writing -------------------------------------------------------------

    def _write(self, data: bytes, shown: str) -> None:
        log.debug("tx %s", redact(shown))
        self.port.write(data)

    def _read_line(self, deadline: float) -> str | None:
        """The next CRLF-terminated line, or None at the deadline."""
        while b"\r\n" not in self._buffer:
            if self.clock() >= deadline:
                return None
            self._buffer += self.port.read(max(1, self.port.in_waiting))
        raw, self._buffer = self._buffer.split(b"\r\n", 1)
        line = raw.decode("ascii", errors="replace").strip()
        if line:
            log.debug("rx %s", redact(line))
        return line

    def _next(self, deadline: float) -> tuple[str, Event | echonet.Frame | None] | None:
        """The next line and what it means (an EVENT, a frame from the meter, or None), after
        whatever matters at any time (a session end, a notification) has been taken in."""
        line = self._read_line(deadline)
        return None if line is None else (line, self._observe(line))

    def _next_line(self, deadline: float) -> str | None:
        got = self._next(deadline)
        return None if got is None else got[0]

    def _observe(self, line: str) -> Event | echonet.Frame | None:
        if not line:
            return None
        if not line.isprintable() or "\ufffd" in line:
            self._count_unparsed("noise", line, "bytes that are not text")
            return None
        if line.startswith("EVENT"):
            return self._observe_event(line)
        if line.startswith("ERXUDP"):
            frame = self._meter_frame(line)
            if frame is not None and frame.esv in (echonet.INF, echonet.INFC):
                self.notifications.append(frame)
            return frame
        if not _KNOWN_LINE.fullmatch(line):
            self._count_unparsed("other", line, "not a line this module prints")
        return None

    def _observe_event(self, line: str) -> Event | None:
        try:
            event = self.module.parse_event(line)
        except (SkstackError, ValueError) as exc:
            self._count_unparsed("EVENT", line, exc)
            return None
        if event.code in EV_SESSION_ENDED and self.joined:
            log.warning("PANA session ended (EVENT %02X)", event.code)
            self.joined = False
        elif event.code == EV_UDP_SENT and event.param not in (None, "00"):
            log.info("UDP send reported %s (EVENT 21)", event.param)
        return event

    def _count_unparsed(self, kind: str, line: str, why: object) -> None:
        self.unparsed[kind] += 1
        log.warning(
            "ignored an unparseable %s line (%d so far): %s: %r",
            kind,
            self.unparsed[kind],
            why,
            line[:80],
        )

    def _deadline(self, seconds: float) -> float:
        return self.clock() + seconds

    # Commands --------------------------------------------------------------------------

    def command(self, text: str, timeout: float | None = None) -> str:
        """Send one command; the text after OK (e.g. ROPT's value). FAIL raises CommandFailed."""
        self._write(text.encode("ascii") + b"\r\n", text)
        return self._await_ok(text, self._deadline(timeout or self.settings.command_timeout_s))

    def _await_ok(self, what: str, deadline: float) -> str:
        name = what.split()[0]
        while (line := self._next_line(deadline)) is not None:
            if line == "OK" or line.startswith("OK "):
                return line[3:]
            if line.startswith("FAIL"):
                raise CommandFailed(f"{name}: {line}")
        raise ModuleTimeout(f"{name}: no OK within the timeout")

    def reset(self) -> None:
        self.joined = False
        self._buffer = b""
        self.command("SKRESET")

    def set_credentials(self) -> None:
        password = self.credentials.password
        self.command(f"SKSETPWD {len(password):X} {password}")
        self.command(f"SKSETRBID {self.credentials.route_b_id}")

    def scan(self) -> PanDescriptor:
        """Active scans with widening durations until the meter's PAN answers a beacon."""
        for duration in self.settings.scan_durations:
            for attempt in range(1, self.settings.scan_retries + 1):
                pan = self._scan_once(duration)
                if pan:
                    log.info(
                        "found PAN %04X on channel %d (LQI %d)", pan.pan_id, pan.channel, pan.lqi
                    )
                    return pan
                log.info("scan duration %d attempt %d: no PAN", duration, attempt)
        raise JoinFailed("no smart meter PAN found by any scan")

    def _scan_once(self, duration: int) -> PanDescriptor | None:
        per_channel = 0.0096 * (2**duration + 1)
        deadline = self._deadline(CHANNELS * per_channel + self.settings.scan_margin_s)
        self.command(self.module.scan_command(duration))
        found: PanDescriptor | None = None
        block: dict[str, str] | None = None
        while (got := self._next(deadline)) is not None:
            line, parsed = got
            field_match = _PANDESC_FIELD.fullmatch(line)
            if block is not None and field_match:
                block[field_match[1]] = field_match[2]
                continue
            if not line.startswith(("EVENT", "EPANDESC")):
                continue  # the echo, OK, line noise
            if block is not None:
                found = found or self._pan_or_none(block)
                block = None
            if line == "EPANDESC":
                block = {}
            elif isinstance(parsed, Event) and parsed.code == EV_SCAN_DONE:
                return found
        raise ModuleTimeout(f"SKSCAN duration {duration}: no EVENT 22 in time")

    @staticmethod
    def _pan_or_none(block: dict[str, str]) -> PanDescriptor | None:
        try:
            return parse_pan_descriptor(block)
        except SkstackError as exc:  # a noisy line cut the block short: scan again
            log.warning("%s", exc)
            return None

    def link_local_address(self, mac: str) -> str:
        text = f"SKLL64 {mac}"
        self._write(text.encode("ascii") + b"\r\n", text)
        deadline = self._deadline(self.settings.command_timeout_s)
        while (line := self._next_line(deadline)) is not None:
            if _IPV6.fullmatch(line):
                return line
            if line.startswith("FAIL"):
                raise CommandFailed(f"SKLL64: {line}")
        raise ModuleTimeout("SKLL64: no address in time")

    def join(self, pan: PanDescriptor) -> None:
        """PANA authentication with the meter: EVENT 25 is success, EVENT 24 failure."""
        self.command(f"SKSREG S2 {pan.channel:X}")
        self.command(f"SKSREG S3 {pan.pan_id:04X}")
        ipaddr = self.link_local_address(pan.addr)
        self.command(f"SKJOIN {ipaddr}")
        deadline = self._deadline(self.settings.join_timeout_s)
        while (got := self._next(deadline)) is not None:
            parsed = got[1]
            if not isinstance(parsed, Event):
                continue
            code = parsed.code
            if code == EV_PANA_OK:
                self.pan, self.meter_ip, self.joined = pan, ipaddr, True
                self._unanswered = 0
                log.info("joined the meter's PAN %04X", pan.pan_id)
                return
            if code == EV_PANA_FAILED:
                raise JoinFailed("PANA authentication failed (EVENT 24): check BROUTE_ID/PASSWORD")
        raise ModuleTimeout("SKJOIN: neither EVENT 25 nor 24 in time")

    def connect(self) -> None:
        """From any state to a PANA session with the meter: reset, credentials, scan, join.

        A failed join is retried with the PAN already found; when every attempt fails the
        PAN is forgotten, so the next connect() scans again (the meter may have moved channel).
        """
        self.reset()
        self.set_credentials()
        self.module.ensure_hex_output(self)
        pan = self.pan or self.scan()
        for attempt in range(1, self.settings.join_attempts + 1):
            try:
                self.join(pan)
                return
            except JoinFailed as exc:
                log.warning("join attempt %d/%d: %s", attempt, self.settings.join_attempts, exc)
                if attempt < self.settings.join_attempts:
                    self.sleep(self.settings.join_backoff_s * attempt)
        self.pan = None
        raise JoinFailed(f"no PANA session after {self.settings.join_attempts} attempts")

    # ECHONET Lite over UDP -------------------------------------------------------------

    def _next_tid(self) -> int:
        self._tid = self._tid % 0xFFFF + 1
        return self._tid

    def get(self, epcs: tuple[int, ...]) -> echonet.Frame:
        """Get_Res or Get_SNA of the meter for the properties; raises NoAnswer or SessionLost."""
        tid = self._next_tid()
        return self._exchange(echonet.get_request(tid, epcs), tid)

    def set(self, properties: tuple[tuple[int, bytes], ...]) -> echonet.Frame:
        """Set_Res or SetC_SNA of the meter (SetC); raises NoAnswer or SessionLost."""
        tid = self._next_tid()
        return self._exchange(echonet.set_request(tid, properties), tid)

    def _exchange(self, frame: bytes, tid: int) -> echonet.Frame:
        """Send one request and wait for the meter's answer with its TID.

        SKSENDTO's OK is not waited for on its own: when noise garbles it, the answer that
        follows is still taken. Notifications that come meanwhile are kept.
        """
        if not self.joined or self.meter_ip is None:
            raise SessionLost("no PANA session")
        # Spacing: the meter drops requests that come too fast, and ARIB STD-T108 limits
        # the module's transmit time per hour.
        wait = self._last_send + self.settings.request_spacing_s - self.clock()
        if wait > 0:
            self.sleep(wait)
        header = self.module.sendto_header(self.meter_ip, echonet.UDP_PORT, len(frame))
        self._write(header.encode("ascii") + frame, f"{header}<{len(frame)} bytes>")
        self._last_send = self.clock()
        self.requests += 1
        deadline = self._deadline(self.settings.answer_timeout_s)
        while self.joined and (got := self._next(deadline)) is not None:
            line, parsed = got
            if line.startswith("FAIL"):
                raise CommandFailed(f"SKSENDTO: {line}")
            if (
                isinstance(parsed, echonet.Frame)
                and parsed.tid == tid
                and parsed.esv in echonet.ANSWERS
            ):
                self._unanswered = 0
                return parsed
        if not self.joined:
            raise SessionLost("PANA session ended while waiting for an answer")
        self._unanswered += 1
        if self._unanswered >= self.settings.quiet_after:
            self.joined = False
            raise SessionLost(f"{self._unanswered} requests in a row without an answer")
        raise NoAnswer(f"no answer to TID {tid} within {self.settings.answer_timeout_s}s")

    def _meter_frame(self, line: str) -> echonet.Frame | None:
        """The ECHONET frame of an ERXUDP line from the meter's ECHONET port, else None."""
        try:
            packet = self.module.parse_erxudp(line)
            if packet.sender != self.meter_ip or packet.rport != echonet.UDP_PORT:
                return None  # PANA traffic, or another node
            frame = echonet.decode_frame(packet.data)
        except (SkstackError, echonet.EchonetError) as exc:
            self._count_unparsed("ERXUDP", line, exc)
            return None
        if packet.rssi is not None:
            self.rssi = packet.rssi
        return frame if frame.seoj == echonet.SMART_METER else None

    def take_notifications(self) -> list[echonet.Frame]:
        """Notifications seen so far (periodic 0xEA/0xEB among them), oldest first."""
        taken = list(self.notifications)
        self.notifications.clear()
        return taken
