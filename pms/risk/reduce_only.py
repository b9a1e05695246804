"""Reduce-only orders that a smaller position no longer covers.

On the exchange, "reduce-only" is judged against the master account's position, which is the
sum of every sub-account's. A sub-account's take-profit (SELL 0.5 reduce-only on a long 0.5)
that outlives the position it was placed against (closed by a market order, a liquidation, an
ADL cut) stays valid on the exchange while other sub-accounts keep the master long, and its
fill then opens a short the sub-account never had margin checked for. Binance cancels a
reduce-only order once its position is gone; here the engine does it per sub-account: the
working reduce-only orders of one symbol and side, oldest first, are kept while together they
still fit in what the position can lose on that side, and the rest are cancelled.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from decimal import Decimal

from pms.domain.enums import Side
from pms.domain.numbers import ZERO


@dataclass(frozen=True, slots=True)
class WorkingReduceOnly:
    """A working reduce-only order's unfilled remainder (``order_id``: any key the caller
    wants back)."""

    order_id: int
    symbol: str
    side: Side
    remaining: Decimal


def reducible(position_qty: Decimal, side: Side) -> Decimal:
    """How much an order on ``side`` can take off a position of ``position_qty``
    (signed: long > 0): a SELL reduces a long, a BUY a short, nothing else reduces."""
    if side is Side.SELL:
        return max(position_qty, ZERO)
    return max(-position_qty, ZERO)


def uncovered(
    orders: Iterable[WorkingReduceOnly], positions: Mapping[str, Decimal]
) -> list[WorkingReduceOnly]:
    """The orders to cancel: per symbol and side, ``orders`` (in age order, oldest first)
    are kept while their remainders together fit in what the position can lose on that side;
    an order that does not fit is dropped and the next ones are still tried."""
    kept: dict[tuple[str, Side], Decimal] = {}
    out: list[WorkingReduceOnly] = []
    for order in orders:
        key = (order.symbol, order.side)
        taken = kept.get(key, ZERO)
        if taken + order.remaining <= reducible(positions.get(order.symbol, ZERO), order.side):
            kept[key] = taken + order.remaining
        else:
            out.append(order)
    return out
