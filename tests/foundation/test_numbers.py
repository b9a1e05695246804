from decimal import Decimal

import pytest
from hypothesis import given
from hypothesis import strategies as st

from pms.domain.numbers import is_multiple, parse_decimal, quantize_down, quantize_up, to_wire
from pms.domain.symbols import from_exchange_id, perpetual_of, to_exchange_id

steps = st.sampled_from(
    [Decimal("0.001"), Decimal("0.01"), Decimal("0.1"), Decimal("1"), Decimal("0.00001")]
)
amounts = st.decimals(
    min_value=Decimal("-1e9"),
    max_value=Decimal("1e9"),
    allow_nan=False,
    allow_infinity=False,
    places=8,
)


@pytest.mark.parametrize(
    "raw",
    [
        "NaN",
        "nan",
        "Infinity",
        "-Infinity",
        "inf",
        "",
        " ",
        "1e",
        "abc",
        "0x10",
        "1_000",  # Decimal() would read 1000
        "0.0_1",
        True,
        None,
        [],
        {},
        "1" * 70,
    ],
)
def test_parse_decimal_rejects_junk(raw: object) -> None:
    with pytest.raises(ValueError):
        parse_decimal(raw, "qty")


@pytest.mark.parametrize(
    ("raw", "expected"),
    [("0.015", "0.015"), (0.1, "0.1"), (5, "5"), ("  2.50 ", "2.50"), ("1E+3", "1E+3")],
)
def test_parse_decimal_accepts_strings_and_json_numbers(raw: object, expected: str) -> None:
    assert parse_decimal(raw) == Decimal(expected)


@pytest.mark.parametrize("raw", ["\u0661", "\uff11", "0.\u0665", "1\u00b2"])  # ١ １ 0.٥ 1²
def test_parse_decimal_refuses_digits_other_than_ascii(raw: str) -> None:
    """Decimal() reads any Unicode digit ('١' is 1): a number from outside is 0-9 only."""
    with pytest.raises(ValueError, match="ASCII digits 0-9"):
        parse_decimal(raw, "qty")


def test_parse_decimal_bounds() -> None:
    with pytest.raises(ValueError, match="too large"):
        parse_decimal("1e16")
    with pytest.raises(ValueError, match="decimal places"):
        parse_decimal("0." + "0" * 18 + "1")


@given(amounts, steps)
def test_quantize_down_is_a_multiple_not_larger_in_magnitude(value: Decimal, step: Decimal) -> None:
    q = quantize_down(value, step)
    assert is_multiple(q, step)
    assert abs(q) <= abs(value)
    assert abs(value - q) < step


@given(amounts, steps)
def test_quantize_up_is_a_multiple_not_smaller_in_magnitude(value: Decimal, step: Decimal) -> None:
    q = quantize_up(value, step)
    assert is_multiple(q, step)
    assert abs(q) >= abs(value)
    assert abs(q - value) < step


@given(amounts)
def test_to_wire_round_trips(value: Decimal) -> None:
    text = to_wire(value)
    assert "E" not in text and "e" not in text
    assert Decimal(text) == value


def test_symbols_map_both_ways() -> None:
    assert to_exchange_id("BTC/USDT:USDT") == "BTCUSDT"
    assert from_exchange_id("ethusdt") == "ETH/USDT:USDT"
    assert from_exchange_id("1000PEPEUSDT") == "1000PEPE/USDT:USDT"
    with pytest.raises(ValueError):
        to_exchange_id("BTCUSDT")
    with pytest.raises(ValueError):
        from_exchange_id("USDT")
    with pytest.raises(ValueError):
        from_exchange_id("BTCUSDT_260626")


@pytest.mark.parametrize(
    ("exchange_id", "symbol"),
    [
        ("BTCUSDT", "BTC/USDT:USDT"),
        ("ETHUSDC", "ETH/USDC:USDC"),
        ("1000PEPEUSDT", "1000PEPE/USDT:USDT"),
        ("BTCUSDT_260626", None),  # a quarterly
        ("ETHUSDT_251226", None),
        ("USDT", None),
        ("BTC-USDT", None),
        ("ÀUSDT", None),
        ("", None),
    ],
)
def test_perpetual_of(exchange_id: str, symbol: str | None) -> None:
    assert perpetual_of(exchange_id) == symbol
