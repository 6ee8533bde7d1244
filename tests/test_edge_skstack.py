"""SKSTACK IP driver: line parsing, and the real driver against the module simulator on a pty."""

from __future__ import annotations

import logging
import time
from decimal import Decimal

import pytest
from edge_harness import FAST, PASSWORD, ROUTE_B_ID, simulated

from contracts.settings import Environment
from edge import echonet as el
from edge.credentials import Credentials, CredentialsError
from edge.simulator import (
    METER_IP,
    Faults,
    ModuleSim,
    SimulatedMeter,
    VirtualClock,
    VirtualPort,
)
from edge.skstack import (
    BP35A1,
    BP35C0,
    CommandFailed,
    Driver,
    JoinFailed,
    ModuleTimeout,
    NoAnswer,
    SessionLost,
    Settings,
    SkstackError,
    module_family,
    redact,
)

pytestmark = pytest.mark.timeout(60)

# --- pure parsing ------------------------------------------------------------------------

A1_RX = (
    "ERXUDP FE80:0000:0000:0000:021D:1290:1234:5678 FE80:0000:0000:0000:021D:1290:0003:C890 "
    "0E1A 0E1A 001D129012345678 1 0012 1081000102880105FF017201E704000001F4"
)


def test_bp35a1_erxudp_layout() -> None:
    packet = BP35A1().parse_erxudp(A1_RX)
    assert (packet.sender, packet.rport, packet.lport, packet.secured) == (
        METER_IP,
        3610,
        3610,
        True,
    )
    assert el.decode_instant_power(el.decode_frame(packet.data).values()[0xE7]) == 500


@pytest.mark.parametrize("middle", ["1 0", "C8 1 0"])  # SECURED SIDE, or RSSI SECURED SIDE
def test_bp35c0_erxudp_layouts(middle: str) -> None:
    line = A1_RX.replace(" 1 0012 ", f" {middle} 0012 ")
    packet = BP35C0().parse_erxudp(line)
    assert packet.secured and len(packet.data) == 0x12


def test_erxudp_from_the_other_family_is_refused_with_the_reason() -> None:
    with pytest.raises(SkstackError, match="bp35c0: ERXUDP with 9 fields"):
        BP35C0().parse_erxudp(A1_RX)
    with pytest.raises(SkstackError, match="DATALEN 18 but 2 bytes"):
        BP35A1().parse_erxudp(A1_RX.rsplit(" ", 1)[0] + " 1081")


def test_events_with_and_without_side() -> None:
    assert BP35A1().parse_event(f"EVENT 21 {METER_IP} 00").param == "00"
    event = BP35C0().parse_event(f"EVENT 21 {METER_IP} 0 02")
    assert (event.code, event.param) == (0x21, "02")
    assert BP35C0().parse_event(f"EVENT 25 {METER_IP} 0").code == 0x25


def test_module_specific_commands() -> None:
    assert BP35A1().scan_command(6) == "SKSCAN 2 FFFFFFFF 6"
    assert BP35C0().scan_command(6) == "SKSCAN 2 FFFFFFFF 6 0"
    assert BP35A1().sendto_header(METER_IP, 0x0E1A, 14) == f"SKSENDTO 1 {METER_IP} 0E1A 1 000E "
    assert BP35C0().sendto_header(METER_IP, 0x0E1A, 14) == f"SKSENDTO 1 {METER_IP} 0E1A 1 0 000E "
    with pytest.raises(ValueError, match="EDGE_MODULE 'bp35x9'"):
        module_family("bp35x9")


def test_redact_hides_the_secrets() -> None:
    assert redact(f"SKSETPWD C {PASSWORD}") == "SKSETPWD C ***"
    assert redact(f"SKSETRBID {ROUTE_B_ID}") == "SKSETRBID ***"
    assert redact("SKSREG S2 21") == "SKSREG S2 21"


def test_credentials_from_env_or_files(tmp_path) -> None:
    (tmp_path / "id").write_text(ROUTE_B_ID + "\n")
    (tmp_path / "pw").write_text(PASSWORD + "\n")
    from_files = {
        "BROUTE_ID_FILE": str(tmp_path / "id"),
        "BROUTE_PASSWORD_FILE": str(tmp_path / "pw"),
    }
    assert Credentials.from_env(Environment(from_files)) == Credentials(ROUTE_B_ID, PASSWORD)
    assert PASSWORD not in repr(Credentials.from_env(Environment(from_files)))
    with pytest.raises(CredentialsError, match="set BROUTE_PASSWORD or BROUTE_PASSWORD_FILE"):
        Credentials.from_env(Environment({"BROUTE_ID": ROUTE_B_ID}))
    with pytest.raises(CredentialsError, match="32 ASCII") as bad:
        Credentials.from_env(
            Environment({"BROUTE_ID": "short-secret", "BROUTE_PASSWORD": PASSWORD})
        )
    assert "short-secret" not in str(bad.value)


# --- against the simulator ---------------------------------------------------------------


@pytest.mark.parametrize("family", ["bp35a1", "bp35c0", "rl7023", "rs-wsuha-p"])
def test_join_and_read(family: str) -> None:
    with simulated(family, unit_kwh=Decimal("0.01"), start_raw=12_345) as (driver, sim):
        driver.connect()
        assert driver.joined and driver.meter_ip == METER_IP
        answer = driver.get((el.EPC_INSTANT_POWER, el.EPC_ENERGY_NORMAL, el.EPC_UNIT))
        values = answer.values()
        assert answer.esv == el.GET_RES
        assert el.decode_instant_power(values[0xE7]) > 0
        assert el.decode_cumulative(values[0xE0]) >= 12_345
        assert el.decode_unit(values[0xE1]) == Decimal("0.01")
    # ROHM modules ship in binary mode: the driver reads the option and switches it once;
    # the dual-stack dongles print hex only and have no ROPT/WOPT.
    wopt = [c for c in sim.commands if c.startswith(("ROPT", "WOPT"))]
    assert wopt == (["ROPT", "WOPT 01"] if family.startswith("bp35") else [])


def test_unknown_property_comes_back_as_get_sna() -> None:
    with simulated() as (driver, _):
        driver.connect()
        answer = driver.get((el.EPC_INSTANT_POWER, 0xE8))
        assert answer.esv == el.GET_SNA
        assert set(answer.values()) == {0xE7}


def test_scan_widens_its_duration_until_the_meter_answers() -> None:
    with simulated(faults=Faults(scan_min_duration=6)) as (driver, sim):
        driver.connect()
        scans = [c for c in sim.commands if c.startswith("SKSCAN")]
        assert scans == ["SKSCAN 2 FFFFFFFF 4", "SKSCAN 2 FFFFFFFF 5", "SKSCAN 2 FFFFFFFF 6"]
        assert driver.pan is not None and driver.pan.pan_id == 0x8888


def test_no_meter_in_range_is_a_join_failure() -> None:
    with (
        simulated(faults=Faults(scan_min_duration=99)) as (driver, _),
        pytest.raises(JoinFailed, match="no smart meter PAN"),
    ):
        driver.connect()


def test_survives_a_session_drop() -> None:
    with simulated(faults=Faults(session_drop_after=2)) as (driver, sim):
        driver.connect()
        driver.get((el.EPC_INSTANT_POWER,))
        driver.get((el.EPC_INSTANT_POWER,))  # answered, then EVENT 29
        with pytest.raises(SessionLost):
            driver.get((el.EPC_INSTANT_POWER,))
        assert not driver.joined
        driver.connect()  # the PAN is remembered: no second scan
        assert driver.get((el.EPC_INSTANT_POWER,)).esv == el.GET_RES
        assert sum(c.startswith("SKSCAN") for c in sim.commands) == 1
        assert sim.joins == 2


def test_join_that_fails_twice_then_succeeds() -> None:
    with simulated(faults=Faults(join_failures=2)) as (driver, sim):
        driver.connect()
        assert driver.joined and sim.joins == 3
        assert driver.get((el.EPC_ENERGY_NORMAL,)).esv == el.GET_RES


def test_join_that_keeps_failing_forgets_the_pan() -> None:
    with simulated(faults=Faults(join_failures=10)) as (driver, _):
        with pytest.raises(JoinFailed, match="after 3 attempts"):
            driver.connect()
        assert driver.pan is None and not driver.joined


def test_wrong_password_fails_the_join_and_never_reaches_the_log(caplog) -> None:
    caplog.set_level(logging.DEBUG)
    with simulated() as (driver, sim):
        sim.expected_password = "SOMETHINGELSE"
        with pytest.raises(JoinFailed):
            driver.connect()
    assert "SKSETPWD C ***" in caplog.text
    assert PASSWORD not in caplog.text and ROUTE_B_ID not in caplog.text


def test_silent_module_times_out_cleanly() -> None:
    with simulated(faults=Faults(silent=True)) as (driver, _):
        started = time.monotonic()
        with pytest.raises(ModuleTimeout, match="SKRESET: no OK"):
            driver.connect()
        assert time.monotonic() - started < FAST.command_timeout_s + 1


def test_unanswered_requests_then_a_quiet_link_means_rejoin() -> None:
    with simulated(faults=Faults(unanswered=5)) as (driver, _):
        driver.connect()
        for _ in range(FAST.quiet_after - 1):
            with pytest.raises(NoAnswer):
                driver.get((el.EPC_INSTANT_POWER,))
        with pytest.raises(SessionLost, match="in a row without an answer"):
            driver.get((el.EPC_INSTANT_POWER,))
        assert not driver.joined


def test_garbage_lines_are_ignored() -> None:
    with simulated("bp35c0", faults=Faults(garbage_every=3)) as (driver, _):
        driver.connect()
        for _ in range(3):
            assert el.EPC_INSTANT_POWER in driver.get((el.EPC_INSTANT_POWER,)).values()


def test_fail_reply_is_an_error() -> None:
    with simulated() as (driver, _), pytest.raises(CommandFailed, match="SKBOGUS: FAIL ER04"):
        driver.command("SKBOGUS")


def test_requests_are_spaced() -> None:
    spaced = Settings(**{**FAST.__dict__, "request_spacing_s": 0.3})
    with simulated(settings=spaced) as (driver, _):
        driver.connect()
        started = time.monotonic()
        for _ in range(3):
            driver.get((el.EPC_INSTANT_POWER,))
        assert time.monotonic() - started >= 2 * 0.3


def test_a_push_between_sendto_and_its_ok_is_kept(caplog) -> None:
    boundary = 1_764_000_000.0 // 1800 * 1800 + 1800
    clock = VirtualClock(boundary - 30)
    sim = ModuleSim(SimulatedMeter(clock=clock.time), "rl7023", clock=clock.time)
    driver = Driver(
        VirtualPort(sim, clock),
        module_family("rl7023"),
        Credentials(ROUTE_B_ID, PASSWORD),
        FAST,
        clock=clock.time,
        sleep=clock.sleep,
    )
    driver.connect()
    clock.sleep(boundary - clock.time())  # the half hour passes as the request goes out
    caplog.set_level(logging.DEBUG, logger="edge.skstack")
    answer = driver.get((el.EPC_INSTANT_POWER,))
    received = [r.getMessage()[3:10] for r in caplog.records if r.getMessage().startswith("rx ")]
    echo = received.index("SKSENDT")
    assert received[echo : echo + 5] == ["SKSENDT", "EVENT 2", "ERXUDP ", "OK", "ERXUDP "]
    assert answer.esv == el.GET_RES
    # The module printed the INF after SKSENDTO's EVENT 21 and before its OK.
    (push,) = driver.take_notifications()
    when, raw = el.decode_fixed_time(push.values()[el.EPC_FIXED_TIME_NORMAL])
    assert when is not None and when.minute in (0, 30) and when.second == 0
    assert raw == sim.meter.raw_counter(boundary)
    assert sim.intact[-2][0] == "push" and sim.intact[-1][0] == "answer"  # type: ignore[index]
