"""Pure one-way position arithmetic: what a fill does to a net position.

Signed quantities: + long, - short. A fill on the same side adds (weighted-average entry); on
the other side it reduces, closes, or flips (close everything, open the rest at the fill
price). Realized PnL is booked on the reduced part only: ``closed · (price - entry) · sign``.
"""

from __future__ import annotations

from dataclasses import dataclass
from decimal import ROUND_HALF_EVEN, Decimal

from pms.domain.enums import Side
from pms.domain.numbers import ZERO

# Weighted entries are kept to 12 decimals, so the value in memory is the value stored.
ENTRY_QUANTUM = Decimal("1e-12")


@dataclass(frozen=True, slots=True)
class FillEffect:
    qty: Decimal  # new signed quantity
    entry: Decimal  # new entry price (0 when flat)
    realized: Decimal  # realized PnL of this fill, before fees
    closed_qty: Decimal  # how much of the old position this fill closed (>= 0)
    opened_qty: Decimal  # how much new exposure it opened (>= 0)

    @property
    def flipped(self) -> bool:
        return self.closed_qty > 0 and self.opened_qty > 0


def apply_fill(
    qty: Decimal, entry: Decimal, side: Side, fill_qty: Decimal, price: Decimal
) -> FillEffect:
    if fill_qty <= 0 or price <= 0:
        raise ValueError("fill quantity and price must be positive")
    signed = fill_qty * side.sign
    if qty == 0 or (qty > 0) == (signed > 0):
        new_qty = qty + signed
        new_entry = ((abs(qty) * entry + fill_qty * price) / abs(new_qty)).quantize(
            ENTRY_QUANTUM, rounding=ROUND_HALF_EVEN
        )
        return FillEffect(new_qty, new_entry, ZERO, ZERO, fill_qty)
    closed = min(abs(qty), fill_qty)
    direction = 1 if qty > 0 else -1
    realized = closed * (price - entry) * direction
    new_qty = qty + signed
    if new_qty == 0:
        return FillEffect(ZERO, ZERO, realized, closed, ZERO)
    if (new_qty > 0) == (qty > 0):
        return FillEffect(new_qty, entry, realized, closed, ZERO)
    # Flipped: the remainder opens a new position at the fill price.
    return FillEffect(new_qty, price, realized, closed, abs(new_qty))
