"""ECHONET Lite codec: frames written out byte by byte from the specification for class 0x0288."""

from datetime import datetime
from decimal import Decimal

import pytest

from edge import echonet as el


def frame(hexstr: str) -> bytes:
    return bytes.fromhex(hexstr.replace(" ", ""))


def test_get_request_bytes_match_the_specification() -> None:
    assert el.get_request(0x0001, [el.EPC_INSTANT_POWER]) == frame(
        "1081 0001 05FF01 028801 62 01 E7 00"
    )
    assert el.get_request(0xBEEF, [0xE0, 0xE3, 0xE7]) == frame(
        "1081 BEEF 05FF01 028801 62 03 E0 00 E3 00 E7 00"
    )


def test_frames_round_trip() -> None:
    original = el.Frame(
        tid=0xFFFF,
        seoj=el.SMART_METER,
        deoj=el.CONTROLLER,
        esv=el.GET_RES,
        properties=((0xE7, b"\x00\x00\x01\xf4"), (0xE1, b"\x01"), (0xD7, b"\x06")),
    )
    assert el.decode_frame(el.encode_frame(original)) == original


def test_get_res_instant_power_from_a_meter() -> None:
    res = el.decode_frame(frame("1081 0001 028801 05FF01 72 01 E7 04 000001F4"))
    assert (res.tid, res.seoj, res.deoj, res.esv) == (1, el.SMART_METER, el.CONTROLLER, 0x72)
    assert el.decode_instant_power(res.values()[0xE7]) == 500


def test_negative_power_while_exporting() -> None:
    res = el.decode_frame(frame("1081 0002 028801 05FF01 72 01 E7 04 FFFFFE0C"))
    assert el.decode_instant_power(res.values()[0xE7]) == -500
    assert el.decode_instant_power(el.encode_instant_power(-1234)) == -1234


@pytest.mark.parametrize("code", ["7FFFFFFE", "7FFFFFFF", "80000000"])
def test_instant_power_no_data_codes_are_absent(code: str) -> None:
    assert el.decode_instant_power(bytes.fromhex(code)) is None


@pytest.mark.parametrize("code", ["FFFFFFFE", "FFFFFFFF", "05F5E100"])
def test_cumulative_no_data_codes_are_absent(code: str) -> None:
    assert el.decode_cumulative(bytes.fromhex(code)) is None


def test_get_sna_keeps_the_values_the_meter_had() -> None:
    sna = el.decode_frame(frame("1081 0003 028801 05FF01 52 02 E7 00 E0 04 00003039"))
    assert sna.esv == el.GET_SNA
    assert sna.values() == {0xE0: bytes.fromhex("00003039")}
    assert el.decode_cumulative(sna.values()[0xE0]) == 12345


def test_scale_properties_and_kwh() -> None:
    res = el.decode_frame(
        frame("1081 0004 028801 05FF01 72 04 D3 04 0000000A E1 01 01 D7 01 06 E0 04 00003039")
    )
    values = res.values()
    scale = el.Scale(
        coefficient=el.decode_coefficient(values[0xD3]),
        unit_kwh=el.decode_unit(values[0xE1]),
        digits=el.decode_digits(values[0xD7]),
    )
    assert scale == el.Scale(10, Decimal("0.1"), 6)
    # kWh = raw x coefficient x unit, exact in decimal: 12345 x 10 x 0.1
    assert scale.kwh(el.decode_cumulative(values[0xE0])) == 12345.0
    assert el.Scale(1, Decimal("0.01"), 6).kwh(12345) == 123.45


@pytest.mark.parametrize(
    ("code", "kwh"),
    [(0x00, "1"), (0x01, "0.1"), (0x02, "0.01"), (0x03, "0.001"), (0x04, "0.0001"),
     (0x0A, "10"), (0x0B, "100"), (0x0C, "1000"), (0x0D, "10000")],
)  # fmt: skip
def test_unit_table(code: int, kwh: str) -> None:
    assert el.decode_unit(bytes((code,))) == Decimal(kwh)
    assert el.encode_unit(Decimal(kwh)) == bytes((code,))


def test_bad_property_values_are_clear_errors() -> None:
    with pytest.raises(el.EchonetError, match="unknown unit code 0x05"):
        el.decode_unit(b"\x05")
    with pytest.raises(el.EchonetError, match="effective digits"):
        el.decode_digits(b"\x09")
    with pytest.raises(el.EchonetError, match="needs 4 bytes"):
        el.decode_instant_power(b"\x00\x01")


def test_periodic_fixed_time_notification() -> None:
    # INF (0x73) of EA: 2025-12-17 12:30:00 (meter time), counter 12345
    inf = el.decode_frame(frame("1081 0000 028801 05FF01 73 01 EA 0B 07E90C110C1E00 00003039"))
    assert inf.esv == el.INF
    assert el.decode_fixed_time(inf.values()[0xEA]) == (datetime(2025, 12, 17, 12, 30), 12345)
    edt = el.encode_fixed_time(datetime(2024, 2, 29, 23, 0), 7)
    assert el.decode_fixed_time(edt) == (datetime(2024, 2, 29, 23, 0), 7)


def test_fixed_time_before_the_first_record_is_absent() -> None:
    infc = el.decode_frame(frame("1081 0000 028801 05FF01 74 01 EB 0B FFFFFFFFFFFFFF FFFFFFFE"))
    assert infc.esv == el.INFC
    assert el.decode_fixed_time(infc.values()[0xEB]) == (None, None)


@pytest.mark.parametrize(
    ("data", "reason"),
    [
        ("1081 0001 028801", "shorter than"),
        ("1082 0001 028801 05FF01 72 01 E7 04 000001F4", "EHD 0x1082"),
        ("1081 0001 028801 05FF01 72 02 E7 04 000001F4", "inside the property list"),
        ("1081 0001 028801 05FF01 72 01 E7 04 0000", "PDC 4 but only 2"),
        ("1081 0001 028801 05FF01 72 01 E7 04 000001F4 00", "1 bytes after"),
    ],
)
def test_malformed_frames_are_rejected_with_the_reason(data: str, reason: str) -> None:
    with pytest.raises(el.EchonetError, match=reason):
        el.decode_frame(frame(data))


def test_rollover_is_unwrapped() -> None:
    state = el.CounterState()
    values = []
    for raw in (999_990, 999_999, 5, 20):
        value, state = el.unwrap(raw, 6, state)
        values.append(value)
    assert values == [999_990, 999_999, 1_000_005, 1_000_020]
    assert state == el.CounterState(last_raw=20, wraps=1)


def test_small_drop_is_a_reset_not_a_wrap() -> None:
    value, state = el.unwrap(100, 6, el.CounterState(last_raw=5000, wraps=2))
    assert value == 2_000_100
    assert state.wraps == 2


# --- the meter's memory ------------------------------------------------------------------


def test_history_register_layout() -> None:
    # 0xE2: day 1 (2 bytes), then 48 counters from 00:00; FFFFFFFE is "no data".
    raws = [1000 + i for i in range(47)] + [None]
    edt = el.encode_history(1, raws)
    assert edt[:6] == frame("0001 000003E8") and edt[-4:] == frame("FFFFFFFE")
    assert el.decode_history(edt) == (1, raws)
    with pytest.raises(el.EchonetError, match="needs 194 bytes"):
        el.decode_history(edt[:-1])


def test_history2_time_and_points() -> None:
    newest = datetime(2025, 12, 17, 13, 30)
    assert el.encode_history2_time(newest, 6) == frame("07E9 0C 11 0D 1E 06")
    assert el.decode_history2_time(frame("07E9 0C 11 0D 1E 06")) == (newest, 6)
    edt = el.encode_history2(newest, [(500, 7), (None, None)])
    assert edt == frame("07E9 0C 11 0D 1E 02 000001F4 00000007 FFFFFFFE FFFFFFFE")
    assert el.decode_history2(edt) == (newest, [(500, 7), (None, None)])
    with pytest.raises(el.EchonetError, match="2 points need 23 bytes"):
        el.decode_history2(edt[:-1])
    with pytest.raises(el.EchonetError, match=r"outside 1\.\.12"):
        el.encode_history2_time(newest, 13)


def test_property_maps_as_a_list_and_as_a_bitmap() -> None:
    assert el.decode_property_map(frame("03 80 E7 9F")) == {0x80, 0xE7, 0x9F}
    bitmap = bytearray(17)
    bitmap[0] = 16
    bitmap[1 + 0x0] |= 1 << 0  # 0x80
    bitmap[1 + 0x7] |= 1 << 6  # 0xE7
    bitmap[1 + 0xF] |= 1 << 1  # 0x9F
    assert el.decode_property_map(bytes(bitmap)) == {0x80, 0xE7, 0x9F}
    many = frozenset(range(0xD0, 0xF0))
    assert el.decode_property_map(el.encode_property_map(many)) == many


def test_unwrap_near_a_live_counter() -> None:
    # 6 digits: the live counter is at 1,000,500 (one wrap); a register of 999,900 from
    # before the wrap is 999,900; one of 300 from after it is 1,000,300.
    assert el.unwrap_near(999_900, 6, 1_000_500) == 999_900
    assert el.unwrap_near(300, 6, 1_000_500) == 1_000_300
    assert el.unwrap_near(300, 6, None) == 300
