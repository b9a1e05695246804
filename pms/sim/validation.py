"""Request parameters → validated values, with Binance's error codes for each failure.

Params arrive as the decoded ``key=value`` pairs of the query or form body, e.g.
``symbol=BTCUSDT&side=BUY&type=LIMIT&quantity=0.010&price=60000&timeInForce=GTC``.
"""

from __future__ import annotations

import re
from decimal import Decimal

from pms.domain.numbers import parse_decimal
from pms.sim import errors
from pms.sim.instruments import SymbolSpec
from pms.sim.orders import OrderRequest, OrderType, Tif

CLIENT_ID = re.compile(r"^[\.A-Z\:/a-z0-9_-]{1,36}$")
HISTORY_DAYS = 7
HISTORY_MS = HISTORY_DAYS * 24 * 3_600_000
UNBOUNDED_MS = 1 << 62
CONDITIONAL = {"STOP", "STOP_MARKET", "TAKE_PROFIT", "TAKE_PROFIT_MARKET", "TRAILING_STOP_MARKET"}

Params = dict[str, str]


def require(params: Params, name: str) -> str:
    value = params.get(name)
    if value is None or value == "":
        raise errors.mandatory(name)
    return value


def decimal_param(params: Params, name: str) -> Decimal:
    try:
        return parse_decimal(require(params, name), name)
    except ValueError:
        raise errors.mandatory(name) from None


def int_param(params: Params, name: str, default: int | None = None) -> int | None:
    value = params.get(name)
    if value is None or value == "":
        return default
    if not re.fullmatch(r"-?\d{1,19}", value):
        raise errors.SimError(-1100, f"Illegal characters found in parameter '{name}'.")
    return int(value)


def limit_param(params: Params, default: int, top: int) -> int:
    """``limit``: ``default`` when absent, else 1..``top`` (-1130 outside)."""
    value = int_param(params, "limit", default)
    if value is None or not 1 <= value <= top:
        raise errors.bad_param("limit")
    return value


def bool_param(params: Params, name: str) -> bool:
    value = params.get(name, "false").lower()
    if value not in ("true", "false"):
        raise errors.bad_param(name)
    return value == "true"


def check_qty(spec: SymbolSpec, qty: Decimal, market: bool) -> None:
    if qty <= 0:
        raise errors.qty_not_positive()
    if -int(qty.normalize().as_tuple().exponent) > spec.qty_precision:
        raise errors.precision()
    if qty % spec.step != 0:
        raise errors.lot_size()
    top = spec.market_max_qty if market else spec.max_qty
    if qty < spec.min_qty or qty > top:
        raise errors.lot_size()


def check_price(spec: SymbolSpec, price: Decimal) -> None:
    if price <= 0:
        raise errors.price_not_positive()
    if -int(price.normalize().as_tuple().exponent) > spec.price_precision:
        raise errors.precision()
    if price % spec.tick != 0:
        raise errors.off_tick()
    if price < spec.min_price or price > spec.max_price:
        raise errors.price_filter()


def check_percent_price(spec: SymbolSpec, buy: bool, price: Decimal, mark: Decimal) -> None:
    """PERCENT_PRICE, for new limit orders and amends: a BUY above ``mark * multiplierUp``
    (-4016) or a SELL below ``mark * multiplierDown`` (-4024) is refused. Only the side that
    would trade through the mark is bounded: a deep resting bid is fine."""
    if buy and price > mark * spec.multiplier_up:
        raise errors.above_multiplier_cap()
    if not buy and price < mark * spec.multiplier_down:
        raise errors.below_multiplier_floor()


def ack_param(params: Params) -> bool:
    """``newOrderRespType``: True for ``ACK`` (Binance's default: the order as accepted,
    before it matches), False for ``RESULT`` (its state after matching); else -1136."""
    value = params.get("newOrderRespType", "ACK").upper()
    if value not in ("ACK", "RESULT"):
        raise errors.bad_resp_type()
    return value == "ACK"


def time_window(params: Params, now: int) -> tuple[int, int]:
    """``(start, end)`` (ms, inclusive) of a userTrades/allOrders query: Binance answers at
    most 7 days. Neither time sent: the last 7 days; one of them: the 7 days after
    ``startTime`` / before ``endTime``; a longer span: -1127."""
    start, end = int_param(params, "startTime"), int_param(params, "endTime")
    if start is None:
        end = now if end is None else end
        return end - HISTORY_MS, end
    if end is None:
        return start, start + HISTORY_MS
    if end - start > HISTORY_MS:
        raise errors.interval_too_long(HISTORY_DAYS)
    return start, end


def trades_window(params: Params, now: int) -> tuple[int, int]:
    """userTrades' window: ``fromId`` reads by id, whatever the trades' age, and cannot be
    sent with ``startTime``/``endTime`` (-1128); otherwise :func:`time_window`."""
    if not params.get("fromId"):
        return time_window(params, now)
    if params.get("startTime") or params.get("endTime"):
        raise errors.bad_combination()
    return 0, UNBOUNDED_MS


def client_id(params: Params, key: str, default: str) -> str:
    value = params.get(key)
    if value is None:
        return default
    if not CLIENT_ID.match(value):
        raise errors.bad_client_id()
    return value


def order_request(
    spec: SymbolSpec, params: Params, default_client_id: str, mark: Decimal
) -> OrderRequest:
    """Validate a new-order request (``POST /fapi/v1/order`` or one batchOrders item).

    ``mark`` bounds a limit price (PERCENT_PRICE) and values a market order's notional."""
    side = require(params, "side").upper()
    if side not in ("BUY", "SELL"):
        raise errors.SimError(-1117, "Invalid side.")
    type_text = require(params, "type").upper()
    if type_text in CONDITIONAL:
        raise errors.algo_only()
    try:
        otype = OrderType(type_text)
    except ValueError:
        raise errors.SimError(-1116, "Invalid orderType.") from None
    position_side = params.get("positionSide", "BOTH").upper()
    if position_side != "BOTH":
        raise errors.SimError(-4061, "Order's position side does not match user's setting.")
    if params.get("closePosition", "false").lower() == "true":
        raise errors.SimError(
            -4136, "Target strategy invalid for orderType MARKET,closePosition true"
        )
    reduce_only = bool_param(params, "reduceOnly")
    qty = decimal_param(params, "quantity")
    check_qty(spec, qty, otype is OrderType.MARKET)
    price: Decimal | None = None
    if otype is OrderType.LIMIT:
        tif_text = require(params, "timeInForce").upper()
        try:
            tif = Tif(tif_text)
        except ValueError:
            raise errors.SimError(-1115, "Invalid timeInForce.") from None
        if tif is Tif.GTD:
            raise errors.SimError(-1116, "GTD orders are not supported by the simulator.")
        price = decimal_param(params, "price")
        check_price(spec, price)
        check_percent_price(spec, side == "BUY", price, mark)
    else:
        if params.get("price"):
            raise errors.SimError(-1106, "Parameter 'price' sent when not required.")
        tif = Tif.GTC
    notional = qty * (price if price is not None else mark)
    if not reduce_only and notional < spec.min_notional:
        raise errors.min_notional(str(spec.min_notional))
    cid = client_id(params, "newClientOrderId", default_client_id)
    return OrderRequest(spec.symbol, side == "BUY", otype, tif, qty, price, reduce_only, cid)
