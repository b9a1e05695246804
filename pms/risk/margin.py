"""USDⓈ-M margin formulas (contract multiplier 1), pure and Decimal-only.

Sign conventions: ``qty`` is signed (long > 0, short < 0); notional and margins are never
negative; uPnL is ``qty · (mark - entry)`` so it is antisymmetric in the side.

Arithmetic runs in the caller's current decimal context (28 significant digits by default).
We deliberately do not open a ``localcontext()`` per call: the risk pass evaluates tens of
thousands of positions per mark tick and a context switch per position would cost more than
the arithmetic. Values are rounded for display at the wire edge, not here.
"""

from __future__ import annotations

from bisect import bisect_right
from dataclasses import dataclass
from decimal import Decimal

from pms.domain.instrument import Instrument
from pms.domain.numbers import ONE, ZERO

# Margin ratio reported when equity is gone (≤ 0) while positions still need maintenance
# margin: the account is past liquidation, and "infinitely" so compares ≥ every threshold.
RATIO_BEYOND_LIQUIDATION = Decimal("Infinity")


def notional(qty: Decimal, mark: Decimal) -> Decimal:
    """|qty| · mark."""
    return abs(qty * mark)


def unrealized_pnl(qty: Decimal, entry: Decimal, mark: Decimal) -> Decimal:
    """qty · (mark - entry), qty signed."""
    return qty * (mark - entry)


def initial_margin(notional_value: Decimal, leverage: int | Decimal) -> Decimal:
    """notional / leverage."""
    return notional_value / leverage


def margin_ratio(maint_margin: Decimal, equity: Decimal) -> Decimal:
    """Σ maintenance margin / equity.

    Nothing at risk (MM = 0) is 0 whatever the equity, so an empty account is NORMAL.
    Equity ≤ 0 with MM > 0 is :data:`RATIO_BEYOND_LIQUIDATION` (≥ 1: liquidation), because
    the quotient would be negative or undefined and a negative ratio would read as "safe".
    """
    if maint_margin <= ZERO:
        return ZERO
    if equity <= ZERO:
        return RATIO_BEYOND_LIQUIDATION
    return maint_margin / equity


@dataclass(frozen=True, slots=True)
class BracketRow:
    """One leverage bracket, pre-digested for the hot path."""

    floor: Decimal
    cap: Decimal
    mmr: Decimal
    cum: Decimal
    max_leverage: int
    one_minus_mmr: Decimal  # denominators of the liquidation-price formulas, computed once
    one_plus_mmr: Decimal


class BracketTable:
    """A symbol's leverage brackets as sorted caps for a ``bisect`` lookup.

    ``Instrument.bracket_for`` walks dataclasses attribute by attribute; at 10,000 positions
    per tick that walk dominates, so the caps live in a plain list searched in C.
    """

    __slots__ = ("caps", "rows")

    def __init__(self, instrument: Instrument) -> None:
        if not instrument.brackets:
            raise ValueError(f"{instrument.symbol} has no leverage brackets loaded")
        self.rows: tuple[BracketRow, ...] = tuple(
            BracketRow(
                floor=b.notional_floor,
                cap=b.notional_cap,
                mmr=b.maint_margin_ratio,
                cum=b.cum,
                max_leverage=b.initial_leverage,
                one_minus_mmr=ONE - b.maint_margin_ratio,
                one_plus_mmr=ONE + b.maint_margin_ratio,
            )
            for b in instrument.brackets
        )
        # The last bracket is open-ended (same rule as Instrument.bracket_for).
        self.caps: list[Decimal] = [r.cap for r in self.rows[:-1]]

    def index_for(self, notional_value: Decimal) -> int:
        """Index of the bracket with ``floor <= notional < cap``."""
        return bisect_right(self.caps, notional_value)

    def row_for(self, notional_value: Decimal) -> BracketRow:
        return self.rows[bisect_right(self.caps, notional_value)]

    def maint_margin(self, notional_value: Decimal) -> Decimal:
        row = self.rows[bisect_right(self.caps, notional_value)]
        return notional_value * row.mmr - row.cum


# Memo of built tables keyed by symbol, valid while the Instrument object is the same one
# (an `is` check: hashing a frozen Instrument with its brackets on every lookup is slower
# than the lookup itself). Reloaded instruments simply rebuild their table.
_TABLES: dict[str, tuple[Instrument, BracketTable]] = {}


def bracket_table(instrument: Instrument) -> BracketTable:
    cached = _TABLES.get(instrument.symbol)
    if cached is not None and cached[0] is instrument:
        return cached[1]
    table = BracketTable(instrument)
    _TABLES[instrument.symbol] = (instrument, table)
    return table


def bracket_max_leverage(instrument: Instrument, notional_value: Decimal) -> int:
    """The highest leverage the exchange's brackets allow for a position of this notional."""
    return bracket_table(instrument).row_for(notional_value).max_leverage


def maintenance_margin(notional_value: Decimal, instrument: Instrument) -> Decimal:
    """notional · MMR - cum, with the bracket that contains ``notional``."""
    return bracket_table(instrument).maint_margin(notional_value)


def liquidation_price(
    qty: Decimal,
    entry: Decimal,
    others_wallet: Decimal,
    table: BracketTable,
    start: int = 0,
) -> Decimal | None:
    """Cross-margin one-way liquidation price of one position.

    ``others_wallet`` is Binance's ``W = WB - TMM1 + UPNL1``: the wallet minus the other
    positions' maintenance margin plus their uPnL, both held at current marks.

    * Long:  LP = (Q·EP - W - cum) / (Q·(1 - MMR))
    * Short: LP = (Q·EP + W + cum) / (Q·(1 + MMR))

    The bracket is re-evaluated at the notional Q·LP and the price recomputed until it
    settles. Because consistent ``cum`` makes maintenance margin a convex piecewise-linear
    function of notional, each bracket switch moves LP monotonically (up for a long, down for
    a short), so this ends in at most ``len(brackets)`` rounds; ``start`` is the bracket of
    the current notional, which is usually already right.

    ``None`` when no positive price liquidates the account through this position: a long
    whose LP ≤ 0 (collateral covers a fall to zero), or a short whose LP ≤ 0 (the account
    is already past maintenance at every price; its margin ratio says so).
    """
    rows = table.rows
    caps = table.caps
    index = start
    # A consistent bracket table settles within len(rows) rounds; the bound only guards
    # against an inconsistent one (then the last candidate is returned).
    rounds = len(rows)
    if qty > ZERO:
        numerator = qty * entry - others_wallet
        while True:
            row = rows[index]
            price = (numerator - row.cum) / (qty * row.one_minus_mmr)
            settled = bisect_right(caps, qty * price)
            rounds -= 1
            if settled == index or not rounds:
                break
            index = settled
    elif qty < ZERO:
        q = -qty
        numerator = q * entry + others_wallet
        while True:
            row = rows[index]
            price = (numerator + row.cum) / (q * row.one_plus_mmr)
            settled = bisect_right(caps, q * price)
            rounds -= 1
            if settled == index or not rounds:
                break
            index = settled
    else:
        return None
    return price if price > ZERO else None
