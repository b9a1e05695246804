"""What a pre-trade check looks at: the order intent, the account's context, and the verdict.

Everything here is a plain frozen value assembled by the caller (the order worker) from
Postgres and the Redis caches; the checks themselves do no I/O.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from decimal import Decimal
from typing import Any

from pms.domain.enums import AccountStatus, OrderType, Side, Tier, TimeInForce
from pms.domain.instrument import Instrument
from pms.domain.numbers import ZERO, is_price
from pms.errors import (
    AccountFrozen,
    AccountRestricted,
    ExchangeRejected,
    ExchangeUnavailable,
    ExposureLimit,
    InsufficientMargin,
    LeverageTooHigh,
    PmsError,
    RateLimited,
    UnknownSymbol,
    ValidationError,
)
from pms.risk.snapshot import OpenOrder, RiskPosition
from pms.risk.tiers import DEFAULT_THRESHOLDS, TierThresholds

# Binance's default leverage for a symbol nobody has set leverage on.
EXCHANGE_DEFAULT_LEVERAGE = 20


@dataclass(frozen=True, slots=True)
class OrderIntent:
    """An order as the trader asked for it, in base units.

    Orders given as a quote ``notional`` are converted to ``qty`` (on step) by the caller
    before validation, so every check sees the qty that would reach the exchange.
    ``leverage`` None keeps the symbol's current leverage.
    """

    symbol: str
    side: Side
    qty: Decimal
    order_type: OrderType = OrderType.MARKET
    price: Decimal | None = None
    reduce_only: bool = False
    post_only: bool = False
    time_in_force: TimeInForce | None = None
    leverage: int | None = None
    # Placed by the risk engine itself (an ADL cut, a liquidation close): a reducing one goes
    # through a FROZEN account too (a freeze stops the trader, not the engine's risk cuts).
    by_engine: bool = False


@dataclass(frozen=True, slots=True)
class RiskRules:
    """A sub-account's risk rules (table ``risk_rules``). None disables an optional cap."""

    max_leverage: int = 20
    max_notional_per_symbol: Decimal | None = None
    max_exposure_multiple: Decimal | None = Decimal(10)
    price_band_bps: int = 500
    max_orders_per_window: int = 600
    thresholds: TierThresholds = DEFAULT_THRESHOLDS


@dataclass(frozen=True, slots=True)
class Quote:
    """Top of book, for pricing market orders at the side they would take."""

    bid: Decimal
    ask: Decimal


@dataclass(frozen=True, slots=True)
class RiskContext:
    """The sub-account as the checks see it at the moment of the order.

    ``leverages`` holds leverages chosen with ``set_leverage`` for symbols without a position;
    ``recent_order_count`` is how many orders the sub-account placed in the rate window
    before this one; ``tier`` is the current risk tier (RESTRICTED and worse act like status
    RESTRICTED even before the status column catches up).
    """

    status: AccountStatus
    wallet: Decimal
    rules: RiskRules
    positions: Mapping[str, RiskPosition]
    marks: Mapping[str, Decimal]
    instruments: Mapping[str, Instrument]
    open_orders: Sequence[OpenOrder] = ()
    recent_order_count: int = 0
    tier: Tier = Tier.NORMAL
    quotes: Mapping[str, Quote] = field(default_factory=dict)
    leverages: Mapping[str, int] = field(default_factory=dict)

    def position_qty(self, symbol: str) -> Decimal:
        position = self.positions.get(symbol)
        return position.qty if position is not None else ZERO

    def working_qty(
        self, symbol: str, side: Side, *, reduce_only: bool = False, in_flight: bool = False
    ) -> Decimal:
        """The unfilled qty of the orders working on ``symbol`` and ``side``: every one, or
        only the reduce-only ones, or only the market orders in flight (price None)."""
        return sum(
            (
                o.qty
                for o in self.open_orders
                if o.symbol == symbol
                and o.side is side
                and (o.reduce_only or not reduce_only)
                and (o.price is None or not in_flight)
            ),
            start=ZERO,
        )

    def leverage_for(self, intent: OrderIntent) -> int:
        """The leverage the order would trade at: asked > position's > chosen > default."""
        if intent.leverage is not None:
            return intent.leverage
        position = self.positions.get(intent.symbol)
        if position is not None and position.qty:
            return position.leverage
        chosen = self.leverages.get(intent.symbol)
        if chosen is not None:
            return chosen
        return min(EXCHANGE_DEFAULT_LEVERAGE, self.rules.max_leverage)

    def margin_price(self, intent: OrderIntent) -> Decimal | None:
        """The price an order is margined at: its limit price, else the side of the book it
        would take, else mark. None when nothing is known."""
        if intent.order_type is OrderType.LIMIT and intent.price is not None:
            return intent.price
        quote = self.quotes.get(intent.symbol)
        if quote is not None:
            price = quote.ask if intent.side is Side.BUY else quote.bid
            if is_price(price):
                return price
        return self.marks.get(intent.symbol)


@dataclass(frozen=True, slots=True)
class Reason:
    """Why an order is refused: ``code`` is one of SPEC §3.3's error codes."""

    code: str
    message: str
    details: Mapping[str, Any] = field(default_factory=dict)

    def to_error(self) -> dict[str, Any]:
        return {"code": self.code, "message": self.message, "details": dict(self.details)}

    def to_exception(self) -> PmsError:
        """The exception of the engine's tree that carries this reason."""
        cls = _EXCEPTIONS.get(self.code, PmsError)
        return cls(self.message, dict(self.details))


_EXCEPTIONS: dict[str, type[PmsError]] = {
    cls.code: cls
    for cls in (
        ValidationError,
        UnknownSymbol,
        InsufficientMargin,
        LeverageTooHigh,
        ExposureLimit,
        AccountFrozen,
        AccountRestricted,
        ExchangeRejected,
        ExchangeUnavailable,
        RateLimited,
    )
}


@dataclass(frozen=True, slots=True)
class Decision:
    """The validator's verdict: accepted, or denied with every reason (primary first)."""

    reasons: tuple[Reason, ...] = ()

    @property
    def accepted(self) -> bool:
        return not self.reasons

    @property
    def primary(self) -> Reason | None:
        return self.reasons[0] if self.reasons else None

    def to_error(self) -> dict[str, Any] | None:
        """The result ``error`` object: the primary reason, with all reasons in details."""
        if not self.reasons:
            return None
        error = self.reasons[0].to_error()
        error["details"] = {**error["details"], "reasons": [r.to_error() for r in self.reasons]}
        return error


def is_risk_reducing(
    intent: OrderIntent, position_qty: Decimal, working_qty: Decimal = ZERO
) -> bool:
    """True when the order can only shrink the position: it is on the opposite side and its
    qty plus ``working_qty`` is ≤ |position|.

    ``working_qty`` is what the orders already working on the intent's symbol and side
    (reduce-only or not, pending intents included) could close: each of them competes for
    the same position, so ten sells of 1 against a long of 1 are not ten reducing orders but
    one reducing order and a short of 9 (``RiskContext.working_qty`` computes it). The
    default 0 judges the order alone, which is only right when nothing else works on that
    side. An order that would flip the position (sell 3 against a long of 1) is not risk
    reducing either: its excess opens new exposure on the other side.
    """
    if position_qty == ZERO or intent.qty <= ZERO:
        return False
    if (position_qty > ZERO) != (intent.side is Side.SELL):
        return False
    return intent.qty + working_qty <= abs(position_qty)
