"""Pre-trade checks: each a pure ``(intent, context) -> Reason | None``.

A check that cannot judge because another check's precondition fails (unknown symbol, no
mark, qty ≤ 0) returns None and leaves the refusal to the check that owns that problem, so
``validate`` reports each problem once and never raises. Risk-reducing orders (see
``is_risk_reducing``) pass the margin, leverage and exposure checks: a trader short of margin
must always be able to get smaller. Whether an order is risk-reducing counts the orders
already working on its side: together they must fit in the position, or the excess is new
exposure that no check would have looked at.
"""

from __future__ import annotations

from decimal import Decimal

from pms.domain.enums import AccountStatus, OrderType, Side, Tier, TimeInForce
from pms.domain.instrument import Instrument
from pms.domain.numbers import ZERO, is_multiple, is_price, to_wire
from pms.errors import (
    AccountFrozen,
    AccountRestricted,
    ExchangeRejected,
    ExchangeUnavailable,
    ExposureLimit,
    InsufficientMargin,
    LeverageTooHigh,
    RateLimited,
    UnknownSymbol,
    ValidationError,
)
from pms.risk.context import OrderIntent, Reason, RiskContext, is_risk_reducing
from pms.risk.margin import bracket_max_leverage
from pms.risk.snapshot import OpenOrder, RiskSnapshot, compute_snapshot
from pms.risk.snapshot import open_orders_margin as _orders_margin

_BPS = Decimal(10000)


def _w(value: Decimal) -> str:
    return to_wire(value)


def _instrument(intent: OrderIntent, context: RiskContext) -> Instrument | None:
    instrument = context.instruments.get(intent.symbol)
    return instrument if instrument is not None and instrument.trading else None


def _competing(intent: OrderIntent, context: RiskContext, *, reduce_only: bool = False) -> Decimal:
    """What the orders already working on the intent's side could close of the same position
    (every one, or only the reduce-only ones).

    Resting orders accumulate, so they count each other. A reduce-only market order counts
    only the market orders in flight on its side (sent, not yet booked: the position does not
    show them yet): it fills now and can only shrink the position, and it is how a trader
    (``close_position``) or the risk engine (an ADL or liquidation cut) gets smaller whatever
    rests on the book. Refusing it because resting take-profits already cover the position
    would keep the larger position.
    """
    market_only = intent.reduce_only and intent.order_type is OrderType.MARKET
    return context.working_qty(
        intent.symbol, intent.side, reduce_only=reduce_only, in_flight=market_only
    )


def _reduces(intent: OrderIntent, context: RiskContext) -> bool:
    """Risk-reducing together with the orders already working on the intent's side."""
    working = _competing(intent, context)
    return is_risk_reducing(intent, context.position_qty(intent.symbol), working)


def _priced_symbols(context: RiskContext, symbol: str) -> set[str]:
    """The symbols the checks price: the intent's, the held ones, the working orders'."""
    symbols = {symbol, *(s for s, p in context.positions.items() if p.qty)}
    symbols.update(o.symbol for o in context.open_orders)
    return symbols


def _unusable_quote(context: RiskContext, symbol: str) -> bool:
    quote = context.quotes.get(symbol)
    return quote is not None and not (is_price(quote.bid) and is_price(quote.ask))


def _has_market_data(context: RiskContext, symbol: str) -> bool:
    """Usable marks and instruments for the intent's symbol and everything the account holds,
    and a usable quote for the intent's symbol if there is one."""
    return not _unusable_quote(context, symbol) and all(
        s in context.marks and is_price(context.marks[s]) and s in context.instruments
        for s in _priced_symbols(context, symbol)
    )


def _snapshot(context: RiskContext) -> RiskSnapshot:
    return compute_snapshot(
        context.wallet,
        context.positions.values(),
        context.open_orders,
        context.marks,
        context.instruments,
    )


def _worst_qty(context: RiskContext, symbol: str, side: Side, extra: Decimal) -> Decimal:
    """|position| if every working non-reduce-only order on ``side`` (plus ``extra``) fills,
    whether or not the reduce-only ones on that side fill first: those can only take the
    position towards zero, which leaves the plain orders that much more to open beyond it
    (a take-profit closing a long, then a plain sell the size of the long opens a short)."""
    plain = reducing = ZERO
    for o in context.open_orders:
        if o.symbol == symbol and o.side is side:
            if o.reduce_only:
                reducing += o.qty
            else:
                plain += o.qty
    held = context.position_qty(symbol)
    if side is Side.BUY:
        reduced = min(held + reducing, ZERO) if held < 0 else held
        return max(abs(held + plain + extra), abs(reduced + plain + extra))
    reduced = max(held - reducing, ZERO) if held > 0 else held
    return max(abs(held - plain - extra), abs(reduced - plain - extra))


def _usable(intent: OrderIntent, context: RiskContext) -> tuple[Instrument, Decimal] | None:
    """The instrument and margin price when the economic checks can run at all."""
    instrument = _instrument(intent, context)
    if instrument is None or intent.qty <= ZERO or not _has_market_data(context, intent.symbol):
        return None
    price = context.margin_price(intent)
    if price is None or not is_price(price):
        return None
    return instrument, price


# --- account -------------------------------------------------------------------------------


def check_account_status(intent: OrderIntent, context: RiskContext) -> Reason | None:
    """FROZEN and CLOSED trade nothing; RESTRICTED, LIQUIDATING (or a tier of RESTRICTED and
    worse) only reduce. A CLOSED account answers ACCOUNT_FROZEN: to the trader it is an
    account that cannot trade, not a malformed order."""
    status = context.status
    engine_cut = intent.by_engine and intent.reduce_only and _reduces(intent, context)
    if status is AccountStatus.FROZEN and engine_cut:
        return None
    if status in (AccountStatus.FROZEN, AccountStatus.CLOSED):
        return Reason(
            AccountFrozen.code,
            f"sub-account is {status.value.lower()}: no orders accepted",
            {"status": status.value},
        )
    restricted = status in (AccountStatus.RESTRICTED, AccountStatus.LIQUIDATING)
    if (restricted or context.tier.severity >= Tier.RESTRICTED.severity) and not _reduces(
        intent, context
    ):
        held = context.position_qty(intent.symbol)
        working = _competing(intent, context)
        why = ""
        if working and intent.qty <= abs(held) and (held > ZERO) == (intent.side is Side.SELL):
            why = (
                f"; with the {_w(working)} already working on the {intent.side.value} side "
                f"this order would exceed the position {_w(abs(held))}"
            )
        return Reason(
            AccountRestricted.code,
            f"sub-account is {status.value.lower()} (risk tier {context.tier.value}): only "
            f"orders that reduce an existing position are accepted{why}",
            {"status": status.value, "tier": context.tier.value, "working": _w(working)},
        )
    return None


def check_order_rate(intent: OrderIntent, context: RiskContext) -> Reason | None:
    limit = context.rules.max_orders_per_window
    if context.recent_order_count >= limit:
        return Reason(
            RateLimited.code,
            f"order rate limit reached: {context.recent_order_count} orders in the current "
            f"window, limit {limit}; retry shortly",
            {"recent": context.recent_order_count, "limit": limit},
        )
    return None


# --- instrument and order shape -----------------------------------------------------------


def check_symbol(intent: OrderIntent, context: RiskContext) -> Reason | None:
    instrument = context.instruments.get(intent.symbol)
    if instrument is None:
        return Reason(
            UnknownSymbol.code, f"unknown symbol {intent.symbol}", {"symbol": intent.symbol}
        )
    if not instrument.trading:
        return Reason(
            ExchangeRejected.code,
            f"{intent.symbol} is not trading on the exchange right now",
            {"symbol": intent.symbol},
        )
    return None


def check_market_data(intent: OrderIntent, context: RiskContext) -> Reason | None:
    """Without usable marks the margin of the account is unknown: refuse, retryably. A mark
    or quote that is not a positive finite number counts as missing."""
    if intent.symbol not in context.instruments or _has_market_data(context, intent.symbol):
        return None
    symbols = _priced_symbols(context, intent.symbol)
    missing = sorted(s for s in symbols if s not in context.marks)
    unusable = sorted(s for s in symbols if s in context.marks and not is_price(context.marks[s]))
    problems = []
    if missing:
        problems.append(f"no mark price yet for {', '.join(missing)}")
    if unusable:
        shown = ", ".join(f"{s} ({context.marks[s]})" for s in unusable)
        problems.append(f"unusable mark price for {shown}")
    if _unusable_quote(context, intent.symbol):
        quote = context.quotes[intent.symbol]
        problems.append(f"unusable quote for {intent.symbol} (bid {quote.bid}, ask {quote.ask})")
        unusable = sorted({*unusable, intent.symbol})
    if not problems:  # a held or working symbol without an instrument
        problems.append("no market data for a held symbol")
    return Reason(
        ExchangeUnavailable.code,
        f"{'; '.join(problems)}; retry shortly",
        {"symbols": sorted({*missing, *unusable})},
    )


def check_order_shape(intent: OrderIntent, context: RiskContext) -> Reason | None:
    problem = None
    if intent.qty <= ZERO:
        problem = f"qty must be positive, got {_w(intent.qty)}"
    elif intent.order_type is OrderType.LIMIT and (intent.price is None or intent.price <= 0):
        problem = "a limit order needs a positive price"
    elif intent.order_type is OrderType.MARKET and intent.post_only:
        problem = "post-only applies to limit orders only"
    elif intent.post_only and intent.time_in_force in (TimeInForce.IOC, TimeInForce.FOK):
        problem = f"post-only cannot be combined with time in force {intent.time_in_force}"
    elif intent.leverage is not None and intent.leverage < 1:
        problem = f"leverage must be at least 1, got {intent.leverage}"
    if problem is None:
        return None
    return Reason(ValidationError.code, problem, {"field": "order"})


def check_qty_filters(intent: OrderIntent, context: RiskContext) -> Reason | None:
    instrument = _instrument(intent, context)
    if instrument is None or intent.qty <= ZERO:
        return None
    market = intent.order_type is OrderType.MARKET
    step = instrument.market_step_size if market else instrument.step_size
    low = instrument.market_min_qty if market else instrument.min_qty
    high = instrument.market_max_qty if market else instrument.max_qty
    qty = intent.qty
    if not is_multiple(qty, step):
        problem = f"qty {_w(qty)} is not a multiple of step {_w(step)}"
    elif qty < low:
        problem = f"qty {_w(qty)} is below the minimum {_w(low)} for {intent.symbol}"
    elif qty > high:
        problem = f"qty {_w(qty)} is above the maximum {_w(high)} for {intent.symbol}"
    else:
        return None
    return Reason(
        ValidationError.code,
        problem,
        {"field": "qty", "qty": _w(qty), "step": _w(step), "min": _w(low), "max": _w(high)},
    )


def check_price_filters(intent: OrderIntent, context: RiskContext) -> Reason | None:
    instrument = _instrument(intent, context)
    price = intent.price
    if instrument is None or intent.order_type is not OrderType.LIMIT or price is None:
        return None
    if price <= ZERO:
        return None  # check_order_shape owns this
    tick = instrument.tick_size
    if not is_multiple(price, tick):
        problem = f"price {_w(price)} is not a multiple of tick {_w(tick)}"
    elif price < instrument.min_price:
        problem = f"price {_w(price)} is below the minimum {_w(instrument.min_price)}"
    elif price > instrument.max_price:
        problem = f"price {_w(price)} is above the maximum {_w(instrument.max_price)}"
    else:
        return None
    return Reason(ValidationError.code, problem, {"field": "price", "tick": _w(tick)})


def check_min_notional(intent: OrderIntent, context: RiskContext) -> Reason | None:
    """qty · price ≥ the exchange's minimum; reduce-only orders are exempt, as on Binance,
    so a dust position can always be closed."""
    usable = _usable(intent, context)
    if usable is None or intent.reduce_only:
        return None
    instrument, price = usable
    value = intent.qty * price
    if value >= instrument.min_notional:
        return None
    return Reason(
        ValidationError.code,
        f"order notional {_w(value)} is below the minimum {_w(instrument.min_notional)} "
        f"for {intent.symbol}; increase qty",
        {"field": "qty", "notional": _w(value), "min_notional": _w(instrument.min_notional)},
    )


def check_price_band(intent: OrderIntent, context: RiskContext) -> Reason | None:
    """A limit price further than ``price_band_bps`` from mark is almost always a typo; one
    beyond the exchange's PERCENT_PRICE filter on its side would be refused by the exchange
    (a BUY above mark × multiplierUp, a SELL below mark × multiplierDown)."""
    price = intent.price
    mark = context.marks.get(intent.symbol)
    if intent.order_type is not OrderType.LIMIT or price is None or mark is None:
        return None
    if not is_price(mark):
        return None  # check_market_data owns this
    instrument = context.instruments.get(intent.symbol)
    if instrument is not None:
        refused = _beyond_percent_price(intent.side, price, mark, instrument)
        if refused is not None:
            return refused
    band = mark * context.rules.price_band_bps / _BPS
    if abs(price - mark) <= band:
        return None
    low, high = mark - band, mark + band
    return Reason(
        ValidationError.code,
        f"limit price {_w(price)} is outside the allowed band {_w(low)}-{_w(high)} "
        f"({context.rules.price_band_bps} bps around mark {_w(mark)})",
        {"field": "price", "mark": _w(mark), "low": _w(low), "high": _w(high)},
    )


def _beyond_percent_price(
    side: Side, price: Decimal, mark: Decimal, instrument: Instrument
) -> Reason | None:
    if side is Side.BUY and instrument.percent_up is not None:
        limit, word = mark * instrument.percent_up, "above"
        if price <= limit:
            return None
    elif side is Side.SELL and instrument.percent_down is not None:
        limit, word = mark * instrument.percent_down, "below"
        if price >= limit:
            return None
    else:
        return None
    return Reason(
        ValidationError.code,
        f"limit price {_w(price)} is {word} {_w(limit)}, the exchange's limit for a"
        f" {side.value} of {instrument.symbol} at mark {_w(mark)}",
        {"field": "price", "mark": _w(mark), "limit": _w(limit)},
    )


def check_reduce_only(intent: OrderIntent, context: RiskContext) -> Reason | None:
    """A reduce-only order must fit in what the reduce-only orders already working on its side
    leave of the position: together they can only close it, never open the other side."""
    if not intent.reduce_only or intent.qty <= ZERO:
        return None
    held = context.position_qty(intent.symbol)
    reserved = _competing(intent, context, reduce_only=True)
    room = abs(held) - reserved
    if held == ZERO:
        problem = f"reduce-only order but there is no {intent.symbol} position"
    elif (held > ZERO) == (intent.side is Side.BUY):
        problem = (
            f"reduce-only {intent.side.value} would increase the "
            f"{'long' if held > 0 else 'short'} position {_w(held)}"
        )
    elif intent.qty <= room:
        return None
    elif reserved == ZERO:
        problem = (
            f"reduce-only qty {_w(intent.qty)} exceeds the position {_w(abs(held))}; "
            f"use qty {_w(abs(held))} or less"
        )
    else:
        problem = (
            f"reduce-only qty {_w(intent.qty)} exceeds the position {_w(abs(held))} less the "
            f"{_w(reserved)} of reduce-only orders already working; use qty "
            f"{_w(max(room, ZERO))} or less, or cancel some of them"
        )
    return Reason(
        ValidationError.code,
        problem,
        {"field": "reduceOnly", "position": _w(held), "workingReduceOnly": _w(reserved)},
    )


# --- economics ------------------------------------------------------------------------------


def check_leverage(intent: OrderIntent, context: RiskContext) -> Reason | None:
    """leverage ≤ min(rule max, bracket max at the worst-case post-trade notional)."""
    usable = _usable(intent, context)
    if usable is None or (intent.leverage is None and _reduces(intent, context)):
        return None
    instrument, price = usable
    leverage = context.leverage_for(intent)
    post = _worst_qty(context, intent.symbol, intent.side, intent.qty) * price
    bracket_max = bracket_max_leverage(instrument, post)
    limit = min(context.rules.max_leverage, bracket_max)
    if leverage <= limit:
        return None
    why = "your risk rules" if limit == context.rules.max_leverage else "the exchange bracket"
    return Reason(
        LeverageTooHigh.code,
        f"leverage {leverage}x exceeds the maximum {limit}x ({why}) for a "
        f"{intent.symbol} position of notional {_w(post)}",
        {"leverage": leverage, "max": limit, "rule_max": context.rules.max_leverage},
    )


def check_margin(intent: OrderIntent, context: RiskContext) -> Reason | None:
    """Post-trade initial margin (positions + working orders + this order) ≤ equity."""
    usable = _usable(intent, context)
    if usable is None or _reduces(intent, context):
        return None
    price = usable[1]
    leverage = context.leverage_for(intent)
    if leverage < 1:
        return None
    before = _snapshot(context)
    positions_im = ZERO
    for row in before.positions:
        # Changing the symbol's leverage re-margins the position already held there.
        lev = leverage if row.symbol == intent.symbol else row.leverage
        positions_im += row.notional / lev
    held = {row.symbol: row.qty for row in before.positions}
    order = OpenOrder(intent.symbol, intent.side, intent.qty, price, leverage, False)
    orders_im = _orders_margin((*context.open_orders, order), held, context.marks)
    required = positions_im + orders_im
    if required <= before.equity:
        return None
    return Reason(
        InsufficientMargin.code,
        f"insufficient margin: the order needs {_w(required - before.initial_margin)} "
        f"but {_w(before.available)} is available",
        {
            "required": _w(required),
            "equity": _w(before.equity),
            "available": _w(before.available),
        },
    )


def check_symbol_exposure(intent: OrderIntent, context: RiskContext) -> Reason | None:
    cap = context.rules.max_notional_per_symbol
    usable = _usable(intent, context)
    if cap is None or usable is None or _reduces(intent, context):
        return None
    price = usable[1]
    post = _worst_qty(context, intent.symbol, intent.side, intent.qty) * price
    if post <= cap:
        return None
    return Reason(
        ExposureLimit.code,
        f"{intent.symbol} notional would reach {_w(post)}, above the per-symbol cap {_w(cap)}",
        {"notional": _w(post), "cap": _w(cap)},
    )


def check_total_exposure(intent: OrderIntent, context: RiskContext) -> Reason | None:
    multiple = context.rules.max_exposure_multiple
    usable = _usable(intent, context)
    if multiple is None or usable is None or _reduces(intent, context):
        return None
    price = usable[1]
    symbols = {s for s, p in context.positions.items() if p.qty}
    symbols.update(o.symbol for o in context.open_orders if not o.reduce_only)
    symbols.discard(intent.symbol)
    total = _worst_qty(context, intent.symbol, intent.side, intent.qty) * price
    for symbol in symbols:
        worst = max(
            _worst_qty(context, symbol, Side.BUY, ZERO),
            _worst_qty(context, symbol, Side.SELL, ZERO),
        )
        total += worst * context.marks[symbol]
    equity = context.wallet + sum(
        (p.qty * (context.marks[s] - p.entry) for s, p in context.positions.items() if p.qty),
        start=ZERO,
    )
    cap = multiple * equity if equity > ZERO else ZERO
    if total <= cap:
        return None
    return Reason(
        ExposureLimit.code,
        f"total exposure would reach {_w(total)}, above {_w(multiple)}x equity ({_w(cap)})",
        {"exposure": _w(total), "cap": _w(cap), "multiple": _w(multiple)},
    )


__all__ = [
    "check_account_status",
    "check_leverage",
    "check_margin",
    "check_market_data",
    "check_min_notional",
    "check_order_rate",
    "check_order_shape",
    "check_price_band",
    "check_price_filters",
    "check_qty_filters",
    "check_reduce_only",
    "check_symbol",
    "check_symbol_exposure",
    "check_total_exposure",
]
