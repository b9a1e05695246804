"""Instruments: the exchange's trading rules for one symbol, and its leverage brackets."""

from __future__ import annotations

from dataclasses import dataclass
from decimal import Decimal

from pms.domain.numbers import is_multiple


@dataclass(frozen=True, slots=True)
class LeverageBracket:
    """One tier of a symbol's leverage brackets (Binance ``leverageBracket``).

    ``notional_floor <= notional < notional_cap`` uses ``maint_margin_ratio`` and ``cum``
    (the maintenance amount that keeps maintenance margin continuous across tiers).
    """

    bracket: int
    initial_leverage: int
    notional_floor: Decimal
    notional_cap: Decimal
    maint_margin_ratio: Decimal
    cum: Decimal


@dataclass(frozen=True, slots=True)
class Instrument:
    symbol: str  # canonical, e.g. BTC/USDT:USDT
    exchange_id: str  # e.g. BTCUSDT
    base: str
    quote: str
    tick_size: Decimal
    step_size: Decimal
    min_qty: Decimal
    max_qty: Decimal
    market_step_size: Decimal
    market_min_qty: Decimal
    market_max_qty: Decimal
    min_notional: Decimal
    min_price: Decimal
    max_price: Decimal
    trading: bool = True
    brackets: tuple[LeverageBracket, ...] = ()
    # PERCENT_PRICE: the exchange refuses a BUY limit above mark × up and a SELL limit below
    # mark × down (-4016 / -4024); None when the venue states none.
    percent_up: Decimal | None = None
    percent_down: Decimal | None = None

    def bracket_for(self, notional: Decimal) -> LeverageBracket:
        """The bracket whose [floor, cap) contains ``notional`` (the last one beyond all caps)."""
        if not self.brackets:
            raise ValueError(f"{self.symbol} has no leverage brackets loaded")
        for bracket in self.brackets:
            if notional < bracket.notional_cap:
                return bracket
        return self.brackets[-1]

    @property
    def max_leverage(self) -> int:
        return self.brackets[0].initial_leverage if self.brackets else 1

    def price_on_tick(self, price: Decimal) -> bool:
        return is_multiple(price, self.tick_size)

    def qty_on_step(self, qty: Decimal, *, market: bool = False) -> bool:
        return is_multiple(qty, self.market_step_size if market else self.step_size)
