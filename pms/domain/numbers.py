"""Exact decimal arithmetic for prices, quantities and money.

Everything that is money, a price or a quantity is a :class:`~decimal.Decimal` built from a
string and quantised to the instrument's tick or step. ``parse_decimal`` is the edge: it accepts
decimal strings in ASCII and JSON numbers (ints, and floats by their shortest repr, as a JSON
parser hands them over) and rejects NaN, infinities, booleans, non-ASCII digits, exponents
beyond sane bounds and junk.
"""

from __future__ import annotations

from decimal import ROUND_DOWN, ROUND_HALF_EVEN, ROUND_UP, Context, Decimal, InvalidOperation
from typing import TypeAlias

Price: TypeAlias = Decimal
Qty: TypeAlias = Decimal
Money: TypeAlias = Decimal

ZERO = Decimal(0)
ONE = Decimal(1)

# Enough digits for any quantity times any price on any venue we talk to, with room to spare.
CONTEXT = Context(prec=38)
# Largest magnitude accepted from outside; anything larger is a typo or an attack.
MAX_ABS = Decimal("1e15")
MAX_PLACES = 18


def ascii_digits(text: str) -> bool:
    """Only 0-9, at least one. ``str.isdigit`` also accepts '²' (which ``int`` refuses) and
    '٣' (which ``int`` reads as 3): neither belongs in an id or a number from outside."""
    return text.isascii() and text.isdigit()


def parse_decimal(value: object, field: str = "value") -> Decimal:
    """Turn an outside value into a finite Decimal or raise ``ValueError`` naming ``field``."""
    if isinstance(value, bool):
        raise ValueError(f"{field} must be a number, not a boolean")
    if isinstance(value, Decimal):
        result = value
    elif isinstance(value, int):
        result = Decimal(value)
    elif isinstance(value, float):
        # A JSON number reaches us as a float; its shortest repr is what the sender wrote.
        result = Decimal(repr(value))
    elif isinstance(value, str):
        text = value.strip()
        if not text or len(text) > 64:
            raise ValueError(f"{field} must be a decimal string")
        if not text.isascii():
            # Decimal() reads any Unicode digit ('١' is 1, '１' is 1): refuse them, as
            # ``ascii_digits`` does for ids.
            raise ValueError(f"{field} must be written with the ASCII digits 0-9, got {value!r}")
        if "_" in text:
            # Decimal() reads '1_000' as 1000; no exchange or client writes a number so.
            raise ValueError(f"{field} must be a decimal number, got {value!r}")
        try:
            result = Decimal(text)
        except InvalidOperation:
            raise ValueError(f"{field} must be a decimal number, got {value!r}") from None
    else:
        raise ValueError(f"{field} must be a decimal string or number")
    if not result.is_finite():
        raise ValueError(f"{field} must be finite")
    if abs(result) > MAX_ABS:
        raise ValueError(f"{field} is too large")
    exponent = result.as_tuple().exponent
    if isinstance(exponent, int) and exponent < -MAX_PLACES:
        raise ValueError(f"{field} has more than {MAX_PLACES} decimal places")
    return result


def is_price(value: Decimal) -> bool:
    """A price the engine can compute with: finite and positive. A mark of 0 (an empty field
    read as zero) or NaN would make every notional and margin 0."""
    return value.is_finite() and value > 0


def quantize_down(value: Decimal, step: Decimal) -> Decimal:
    """The largest multiple of ``step`` not above ``value`` in magnitude (toward zero)."""
    if step <= 0:
        raise ValueError("step must be positive")
    units = (value / step).to_integral_value(rounding=ROUND_DOWN)
    return (units * step).quantize(step)


def quantize_up(value: Decimal, step: Decimal) -> Decimal:
    if step <= 0:
        raise ValueError("step must be positive")
    units = (value / step).to_integral_value(rounding=ROUND_UP)
    return (units * step).quantize(step)


def quantize_nearest(value: Decimal, step: Decimal) -> Decimal:
    if step <= 0:
        raise ValueError("step must be positive")
    units = (value / step).to_integral_value(rounding=ROUND_HALF_EVEN)
    return (units * step).quantize(step)


def is_multiple(value: Decimal, step: Decimal) -> bool:
    return step > 0 and (value % step) == 0


def money(value: Decimal, places: int = 8) -> Decimal:
    """Round a money amount for storage and display (half-even, ``places`` decimals)."""
    return value.quantize(Decimal(1).scaleb(-places), rounding=ROUND_HALF_EVEN)


def to_wire(value: Decimal) -> str:
    """A decimal string for the wire: no exponent, no trailing zeros beyond the integer."""
    if value == 0:
        return "0"
    text = format(value.normalize(), "f")
    return text
