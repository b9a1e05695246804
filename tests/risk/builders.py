"""Small builders for risk tests: realistic BTC/ETH instruments and account contexts."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from decimal import Decimal

from pms.domain.enums import AccountStatus, OrderType, Side, Tier
from pms.domain.instrument import Instrument, LeverageBracket
from pms.risk import OpenOrder, OrderIntent, RiskContext, RiskPosition, RiskRules

D = Decimal
BTC = "BTC/USDT:USDT"
ETH = "ETH/USDT:USDT"

# (max leverage, floor, cap, MMR) of Binance's BTCUSDT brackets; cum is derived below.
BTC_TIERS = (
    (125, 0, 50_000, "0.004"),
    (100, 50_000, 600_000, "0.005"),
    (75, 600_000, 3_000_000, "0.0065"),
    (50, 3_000_000, 12_000_000, "0.01"),
    (25, 12_000_000, 70_000_000, "0.02"),
    (20, 70_000_000, 100_000_000, "0.025"),
    (10, 100_000_000, 230_000_000, "0.05"),
    (5, 230_000_000, 480_000_000, "0.1"),
    (4, 480_000_000, 600_000_000, "0.125"),
    (3, 600_000_000, 800_000_000, "0.15"),
    (1, 800_000_000, 1_200_000_000, "0.25"),
)


def brackets(tiers: Sequence[tuple[int, int, int, str]] = BTC_TIERS) -> tuple[LeverageBracket, ...]:
    """cum_i = cum_{i-1} + floor_i * (mmr_i - mmr_{i-1}): keeps maintenance margin continuous."""
    out = []
    cum = D(0)
    previous = D(0)
    for number, (leverage, floor, cap, mmr_text) in enumerate(tiers, start=1):
        mmr = D(mmr_text)
        cum += D(floor) * (mmr - previous)
        previous = mmr
        out.append(LeverageBracket(number, leverage, D(floor), D(cap), mmr, cum))
    return tuple(out)


def instrument(
    symbol: str = BTC,
    *,
    tick: str = "0.1",
    step: str = "0.001",
    min_qty: str = "0.001",
    max_qty: str = "1000",
    market_max_qty: str = "120",
    min_notional: str = "100",
    trading: bool = True,
) -> Instrument:
    return Instrument(
        symbol=symbol,
        exchange_id=symbol.split("/")[0] + "USDT",
        base=symbol.split("/")[0],
        quote="USDT",
        tick_size=D(tick),
        step_size=D(step),
        min_qty=D(min_qty),
        max_qty=D(max_qty),
        market_step_size=D(step),
        market_min_qty=D(min_qty),
        market_max_qty=D(market_max_qty),
        min_notional=D(min_notional),
        min_price=D("0.1"),
        max_price=D("4529764"),
        trading=trading,
        brackets=brackets(),
    )


INSTRUMENTS: Mapping[str, Instrument] = {
    BTC: instrument(BTC),
    ETH: instrument(ETH, tick="0.01", min_notional="20"),
}
MARKS: Mapping[str, Decimal] = {BTC: D(60000), ETH: D(3000)}


def pos(symbol: str, qty: str, entry: str, leverage: int = 20) -> RiskPosition:
    return RiskPosition(symbol, D(qty), D(entry), leverage)


def order(
    symbol: str,
    side: Side,
    qty: str,
    price: str | None,
    leverage: int = 10,
    reduce_only: bool = False,
) -> OpenOrder:
    return OpenOrder(
        symbol, side, D(qty), None if price is None else D(price), leverage, reduce_only
    )


def intent(
    side: Side = Side.BUY,
    qty: str = "0.01",
    *,
    symbol: str = BTC,
    price: str | None = None,
    **kwargs: object,
) -> OrderIntent:
    order_type = OrderType.LIMIT if price is not None else OrderType.MARKET
    return OrderIntent(
        symbol=symbol,
        side=side,
        qty=D(qty),
        order_type=order_type,
        price=None if price is None else D(price),
        **kwargs,  # type: ignore[arg-type]
    )


def context(
    *,
    wallet: str = "10000",
    positions: Sequence[RiskPosition] = (),
    open_orders: Sequence[OpenOrder] = (),
    status: AccountStatus = AccountStatus.ACTIVE,
    tier: Tier = Tier.NORMAL,
    marks: Mapping[str, Decimal] | None = None,
    instruments: Mapping[str, Instrument] | None = None,
    recent_order_count: int = 0,
    **rules: object,
) -> RiskContext:
    return RiskContext(
        status=status,
        wallet=D(wallet),
        rules=RiskRules(**rules),  # type: ignore[arg-type]
        positions={p.symbol: p for p in positions},
        marks=dict(MARKS if marks is None else marks),
        instruments=dict(INSTRUMENTS if instruments is None else instruments),
        open_orders=tuple(open_orders),
        recent_order_count=recent_order_count,
        tier=tier,
    )
