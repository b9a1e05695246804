"""REST handlers for ``/fapi/...``: each takes the parsed params and returns a JSON value.

Authentication, faults, weights and error bodies are handled around them in
:mod:`pms.sim.app`; a handler raises :class:`~pms.sim.errors.SimError` to reject.
"""

from __future__ import annotations

import itertools
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from decimal import Decimal
from typing import Any

import orjson

from pms.domain.numbers import ascii_digits
from pms.sim import errors
from pms.sim.account import m8
from pms.sim.auth import parse_params
from pms.sim.funding import INCOME_TYPES, next_funding_time
from pms.sim.market import Level, Market
from pms.sim.orders import Order
from pms.sim.state import SimState
from pms.sim.validation import (
    Params,
    ack_param,
    check_percent_price,
    check_price,
    check_qty,
    client_id,
    decimal_param,
    int_param,
    limit_param,
    order_request,
    require,
    time_window,
    trades_window,
)

Handler = Callable[[Params], Awaitable[Any]]
MAX_BATCH = 5
ONE_ORDER = (1, 1)
# batchOrders (POST and PUT): 5 on the 10 s order counter and 1 on the minute one, whatever
# the number of items (Binance's "Place/Modify Multiple Orders" weights).
BATCH_ORDERS = (5, 1)


def open_orders_weight(query: Params) -> int:
    """``GET /fapi/v1/openOrders``: 1 for one symbol, 40 with the symbol omitted."""
    return 1 if query.get("symbol") else 40


@dataclass(frozen=True, slots=True)
class Route:
    """One endpoint. ``weight`` counts on ``X-MBX-USED-WEIGHT-1M``: a number, or a function
    of the query parameters for weights that depend on them; ``orders`` counts on
    ``X-MBX-ORDER-COUNT-10S`` / ``-1M`` (both 0: not an order endpoint, no order headers)."""

    method: str
    path: str
    handler: Handler
    security: str  # NONE | KEY (API key only) | SIGNED
    weight: int | Callable[[Params], int] = 1
    orders: tuple[int, int] = (0, 0)

    @property
    def is_order(self) -> bool:
        return self.orders != (0, 0)

    def weight_of(self, raw_query: str) -> int:
        """The weight of one request (the query is parsed only for a weight that needs it)."""
        if callable(self.weight):
            return self.weight(parse_params(raw_query))
        return self.weight


class Rest:
    def __init__(self, state: SimState) -> None:
        self.state = state
        self._auto_ids = itertools.count(1)

    @property
    def engine(self) -> Any:
        return self.state.engine

    def routes(self) -> list[Route]:
        r = Route
        out = [
            r("GET", "/fapi/v1/ping", self.ping, "NONE"),
            r("GET", "/fapi/v1/time", self.time, "NONE"),
            r("GET", "/fapi/v1/exchangeInfo", self.exchange_info, "NONE"),
            r("GET", "/fapi/v1/depth", self.depth, "NONE", 5),
            r("GET", "/fapi/v1/ticker/bookTicker", self.book_ticker, "NONE", 2),
            r("GET", "/fapi/v1/ticker/price", self.ticker_price, "NONE"),
            r("GET", "/fapi/v1/ticker/24hr", self.ticker_24hr, "NONE"),
            r("GET", "/fapi/v1/premiumIndex", self.premium_index, "NONE"),
            r("GET", "/fapi/v1/fundingRate", self.funding_rate, "NONE"),
            r("POST", "/fapi/v1/listenKey", self.listen_key_new, "KEY"),
            r("PUT", "/fapi/v1/listenKey", self.listen_key_keepalive, "KEY"),
            r("DELETE", "/fapi/v1/listenKey", self.listen_key_delete, "KEY"),
            r("GET", "/fapi/v1/leverageBracket", self.leverage_bracket, "SIGNED"),
            r("POST", "/fapi/v1/leverage", self.set_leverage, "SIGNED"),
            r("POST", "/fapi/v1/marginType", self.margin_type, "SIGNED"),
            r("GET", "/fapi/v1/positionSide/dual", self.dual_side, "SIGNED"),
            r("POST", "/fapi/v1/positionSide/dual", self.set_dual_side, "SIGNED"),
            r("GET", "/fapi/v1/commissionRate", self.commission_rate, "SIGNED"),
            r("GET", "/fapi/v1/feeBurn", self.fee_burn, "SIGNED", 30),
            r("POST", "/fapi/v1/feeBurn", self.set_fee_burn, "SIGNED"),
            r("POST", "/fapi/v1/order", self.new_order, "SIGNED", 0, ONE_ORDER),
            r("GET", "/fapi/v1/order", self.get_order, "SIGNED"),
            r("DELETE", "/fapi/v1/order", self.cancel_order, "SIGNED"),
            r("PUT", "/fapi/v1/order", self.amend_order, "SIGNED", 1, ONE_ORDER),
            r("POST", "/fapi/v1/batchOrders", self.batch_new, "SIGNED", 5, BATCH_ORDERS),
            r("PUT", "/fapi/v1/batchOrders", self.batch_amend, "SIGNED", 5, BATCH_ORDERS),
            r("DELETE", "/fapi/v1/batchOrders", self.batch_cancel, "SIGNED"),
            r("DELETE", "/fapi/v1/allOpenOrders", self.cancel_all, "SIGNED"),
            r("GET", "/fapi/v1/openOrders", self.open_orders, "SIGNED", open_orders_weight),
            r("GET", "/fapi/v1/openAlgoOrders", self.empty_list, "SIGNED"),
            r("GET", "/fapi/v1/allOrders", self.all_orders, "SIGNED", 5),
            r("GET", "/fapi/v1/userTrades", self.user_trades, "SIGNED", 5),
            r("GET", "/fapi/v1/income", self.income, "SIGNED", 30),
        ]
        out += [
            r("GET", "/fapi/v2/positionRisk", self.position_risk_v2, "SIGNED", 5),
            r("GET", "/fapi/v3/positionRisk", self.position_risk, "SIGNED", 5),
        ]
        for v in ("v2", "v3"):
            out += [
                r("GET", f"/fapi/{v}/account", self.account, "SIGNED", 5),
                r("GET", f"/fapi/{v}/balance", self.balance, "SIGNED", 5),
            ]
        return out

    # --- market data -------------------------------------------------------------------
    async def ping(self, p: Params) -> Any:
        return {}

    async def empty_list(self, p: Params) -> Any:
        return []

    async def time(self, p: Params) -> Any:
        return {"serverTime": self.state.clock.ms()}

    async def exchange_info(self, p: Params) -> Any:
        """``{"timezone":"UTC","serverTime":...,"assets":[...],"symbols":[...]}``"""
        return {
            "timezone": "UTC",
            "serverTime": self.state.clock.ms(),
            "futuresType": "U_MARGINED",
            "rateLimits": [
                {
                    "rateLimitType": "REQUEST_WEIGHT",
                    "interval": "MINUTE",
                    "intervalNum": 1,
                    "limit": 2400,
                },
                {"rateLimitType": "ORDERS", "interval": "MINUTE", "intervalNum": 1, "limit": 1200},
                {"rateLimitType": "ORDERS", "interval": "SECOND", "intervalNum": 10, "limit": 300},
            ],
            "exchangeFilters": [],
            "assets": [{"asset": "USDT", "marginAvailable": True, "autoAssetExchange": "-10000"}],
            "symbols": [spec.exchange_info() for spec in self.state.specs.values()],
        }

    async def depth(self, p: Params) -> Any:
        """``{"lastUpdateId":1000040,"E":...,"T":...,"bids":[["59999.9","0.412"]],"asks":[...]}``"""
        m = self.state.market(require(p, "symbol"))
        limit = int_param(p, "limit", 20) or 20
        if limit not in (5, 10, 20, 50, 100, 500, 1000):
            raise errors.bad_param("limit")
        now = self.state.clock.ms()
        fp, fq = m.spec.fmt_price, m.spec.fmt_qty
        return {
            "lastUpdateId": m.update_id,
            "E": now,
            "T": now,
            "bids": [[fp(a), fq(b)] for a, b in m.side_levels(True, min(limit, 25))],
            "asks": [[fp(a), fq(b)] for a, b in m.side_levels(False, min(limit, 25))],
        }

    def _symbols(self, p: Params) -> list[str]:
        if p.get("symbol"):
            return [self.state.market(p["symbol"]).spec.symbol]
        return list(self.state.markets)

    def _one_or_all(self, p: Params, items: list[dict[str, Any]]) -> Any:
        return items[0] if p.get("symbol") else items

    async def book_ticker(self, p: Params) -> Any:
        out = []
        for s in self._symbols(p):
            m = self.state.markets[s]
            bid, ask = _best(m, True), _best(m, False)
            out.append(
                {
                    "symbol": s,
                    "bidPrice": m.spec.fmt_price(bid[0]),
                    "bidQty": m.spec.fmt_qty(bid[1]),
                    "askPrice": m.spec.fmt_price(ask[0]),
                    "askQty": m.spec.fmt_qty(ask[1]),
                    "time": self.state.clock.ms(),
                    "lastUpdateId": m.update_id,
                }
            )
        return self._one_or_all(p, out)

    async def ticker_price(self, p: Params) -> Any:
        now = self.state.clock.ms()
        out = [
            {"symbol": s, "price": str(self.state.markets[s].mid), "time": now}
            for s in self._symbols(p)
        ]
        return self._one_or_all(p, out)

    async def ticker_24hr(self, p: Params) -> Any:
        now = self.state.clock.ms()
        out = []
        for s in self._symbols(p):
            m = self.state.markets[s]
            px = str(m.mid)
            out.append(
                {"symbol": s, "priceChange": "0", "priceChangePercent": "0",
                 "weightedAvgPrice": px, "lastPrice": px, "lastQty": "0", "openPrice": px,
                 "highPrice": px, "lowPrice": px, "volume": "0", "quoteVolume": "0",
                 "openTime": now - 86_400_000, "closeTime": now, "firstId": 0, "lastId": 0,
                 "count": 0}
            )  # fmt: skip
        return self._one_or_all(p, out)

    async def premium_index(self, p: Params) -> Any:
        """``{"symbol":"BTCUSDT","markPrice":"60000.0","indexPrice":"60000.0",
        "estimatedSettlePrice":"60000.0","lastFundingRate":"0.00010000",
        "interestRate":"0.00010000","nextFundingTime":...,"time":...}``"""
        now = self.state.clock.ms()
        nxt = next_funding_time(now)
        out = []
        for s in self._symbols(p):
            m = self.state.markets[s]
            out.append(
                {"symbol": s, "markPrice": str(m.mark), "indexPrice": str(m.index),
                 "estimatedSettlePrice": str(m.index), "lastFundingRate": m8(m.funding_rate),
                 "interestRate": "0.00010000", "nextFundingTime": nxt, "time": now,
                 "fundingIntervalHours": 8}
            )  # fmt: skip
        return self._one_or_all(p, out)

    async def funding_rate(self, p: Params) -> Any:
        """Oldest first: from ``startTime`` the first ``limit``, otherwise the last ``limit``
        (up to ``endTime``). ``[{"symbol":"BTCUSDT","fundingRate":"0.00010000",
        "fundingTime":1767225600000,"markPrice":"60000.00000000"}]``"""
        symbol = self.state.market(p["symbol"]).spec.symbol if p.get("symbol") else None
        start, end = int_param(p, "startTime"), int_param(p, "endTime")
        rows = self.state.funding.rates(symbol, start, end, limit_param(p, 100, 1000))
        return [r.payload() for r in rows]

    # --- listen keys ---------------------------------------------------------------------
    async def listen_key_new(self, p: Params) -> Any:
        return {"listenKey": self.state.listen_keys.create()}

    async def listen_key_keepalive(self, p: Params) -> Any:
        key = self.state.listen_keys.keepalive()
        if key is None or (p.get("listenKey") and p["listenKey"] != key):
            raise errors.listen_key_missing()
        return {"listenKey": key}

    async def listen_key_delete(self, p: Params) -> Any:
        key = self.state.listen_keys.delete()
        if key is not None:
            await self.state.hub.drop_all(key)
        return {}

    # --- account settings ----------------------------------------------------------------
    async def leverage_bracket(self, p: Params) -> Any:
        """``[{"symbol":"BTCUSDT","notionalCoef":1.0,"brackets":[{"bracket":1,...}]}]``"""
        return [
            {
                "symbol": s,
                "notionalCoef": 1.0,
                "brackets": [b.payload() for b in self.state.specs[s].brackets],
            }
            for s in self._symbols(p)
        ]

    async def set_leverage(self, p: Params) -> Any:
        spec = self.state.market(require(p, "symbol")).spec
        raw = require(p, "leverage")
        lev = int(raw) if ascii_digits(raw) and len(raw) < 6 else 0
        if not 1 <= lev <= spec.max_leverage:
            raise errors.leverage_invalid(raw)
        self.state.account.leverage[spec.symbol] = lev
        cap = spec.max_notional(lev)
        return {"leverage": lev, "maxNotionalValue": str(int(cap)), "symbol": spec.symbol}

    async def margin_type(self, p: Params) -> Any:
        self.state.market(require(p, "symbol"))
        kind = require(p, "marginType").upper()
        if kind in ("CROSSED", "CROSS"):
            raise errors.SimError(-4046, "No need to change margin type.")
        if kind == "ISOLATED":
            raise errors.SimError(-4048, "Isolated margin is not modelled by the simulator.")
        raise errors.bad_param("marginType")

    async def dual_side(self, p: Params) -> Any:
        return {"dualSidePosition": False}

    async def set_dual_side(self, p: Params) -> Any:
        if require(p, "dualSidePosition").lower() == "false":
            raise errors.SimError(-4059, "No need to change position side.")
        raise errors.SimError(-4068, "Hedge mode is not modelled by the simulator.")

    async def commission_rate(self, p: Params) -> Any:
        spec = self.state.market(require(p, "symbol")).spec
        return {"symbol": spec.symbol, "makerCommissionRate": "0.0002",
                "takerCommissionRate": "0.0005"}  # fmt: skip

    async def fee_burn(self, p: Params) -> Any:
        return {"feeBurn": self.state.account.fee_burn}

    async def set_fee_burn(self, p: Params) -> Any:
        """The BNB fee discount flag. With it on Binance charges commissions in BNB while the
        futures wallet holds BNB; the simulated wallet holds only USDT, so commissions stay
        in USDT either way, as Binance's do on a wallet without BNB."""
        raw = require(p, "feeBurn").lower()
        if raw not in ("true", "false"):
            raise errors.bad_param("feeBurn")
        self.state.account.fee_burn = raw == "true"
        return {"code": 200, "msg": "success"}

    # --- orders --------------------------------------------------------------------------
    def _place(self, p: Params) -> dict[str, Any]:
        m = self.state.market(require(p, "symbol"))
        ack = ack_param(p)
        default_id = f"simauto{next(self._auto_ids):016d}"
        req = order_request(m.spec, p, default_id, m.mark)
        order = self.state.engine.place(req)
        return order.ack_payload() if ack else order.payload()

    async def new_order(self, p: Params) -> Any:
        return self._place(p)

    def _lookup(self, p: Params, missing: errors.SimError) -> Order:
        m = self.state.market(require(p, "symbol"))
        oid = int_param(p, "orderId")
        cid = p.get("origClientOrderId") or None
        if oid is None and cid is None:
            raise errors.SimError(
                -1102, "Param 'origClientOrderId' or 'orderId' must be sent, but both were "
                "empty/null!"
            )  # fmt: skip
        order = self.state.engine.find(m.spec.symbol, oid, cid)
        if order is None:
            raise missing
        result: Order = order
        return result

    async def get_order(self, p: Params) -> Any:
        return self._lookup(p, errors.no_such_order()).payload()

    async def cancel_order(self, p: Params) -> Any:
        order = self._lookup(p, errors.unknown_order())
        return self.state.engine.cancel(order).payload()

    def _amend(self, p: Params) -> dict[str, Any]:
        order = self._lookup(p, errors.unknown_order())
        side = require(p, "side").upper()
        if side != order.side:
            raise errors.SimError(-4077, "Side does not match the original order.")
        qty = decimal_param(p, "quantity")
        price = decimal_param(p, "price")
        check_qty(order.spec, qty, False)
        check_price(order.spec, price)
        # Refused here, before the engine touches it: the order stays as it was.
        check_percent_price(order.spec, order.buy, price, self.state.mark(order.symbol))
        return self.state.engine.amend(order, qty, price).payload()

    async def amend_order(self, p: Params) -> Any:
        return self._amend(p)

    def _batch_items(self, p: Params) -> list[Params]:
        try:
            items = orjson.loads(require(p, "batchOrders"))
        except orjson.JSONDecodeError:
            raise errors.bad_param("batchOrders") from None
        if not isinstance(items, list) or not items or len(items) > MAX_BATCH:
            raise errors.bad_param("batchOrders")
        out: list[Params] = []
        for item in items:
            if not isinstance(item, dict):
                raise errors.bad_param("batchOrders")
            out.append({str(k): _param_text(v) for k, v in item.items()})
        return out

    async def batch_new(self, p: Params) -> Any:
        return [_guard(self._place, item) for item in self._batch_items(p)]

    async def batch_amend(self, p: Params) -> Any:
        return [_guard(self._amend, item) for item in self._batch_items(p)]

    async def batch_cancel(self, p: Params) -> Any:
        symbol = require(p, "symbol")
        self.state.market(symbol)
        # Binance documents orderIdList / origClientOrderIdList; ccxt sends them lowercase.
        ids = p.get("orderIdList") or p.get("orderidlist")
        cids = p.get("origClientOrderIdList") or p.get("origclientorderidlist")
        if ids and cids:
            raise errors.bad_combination()
        raw, key = (ids, "orderId") if ids else (cids, "origClientOrderId")
        if not raw:
            raise errors.mandatory("orderIdList")
        try:
            values = orjson.loads(raw)
        except orjson.JSONDecodeError:
            raise errors.bad_param(key) from None
        if not isinstance(values, list) or len(values) > 10:
            raise errors.bad_param(key)
        return [
            _guard(
                lambda q: self.state.engine.cancel(
                    self._lookup(q, errors.unknown_order())
                ).payload(),
                {"symbol": symbol, key: _param_text(v)},
            )
            for v in values
        ]

    async def cancel_all(self, p: Params) -> Any:
        m = self.state.market(require(p, "symbol"))
        for order in self.state.engine.open_orders(m.spec.symbol):
            self.state.engine.cancel(order)
        return {"code": 200, "msg": "The operation of cancel all open order is done."}

    async def open_orders(self, p: Params) -> Any:
        symbol = self.state.market(p["symbol"]).spec.symbol if p.get("symbol") else None
        return [o.payload() for o in self.state.engine.open_orders(symbol)]

    async def all_orders(self, p: Params) -> Any:
        """Orders created within a window of at most 7 days (the last 7 by default; see
        :func:`~pms.sim.validation.time_window`), from ``orderId`` on if sent."""
        symbol = self.state.market(require(p, "symbol")).spec.symbol
        from_id = int_param(p, "orderId", 0) or 0
        start, end = time_window(p, self.state.clock.ms())
        limit = min(max(int_param(p, "limit", 500) or 500, 1), 1000)
        rows = [
            o for o in self.state.engine.orders.values()
            if o.symbol == symbol and o.order_id >= from_id and start <= o.time <= end
        ]  # fmt: skip
        rows = rows[:limit] if from_id else rows[-limit:]
        return [o.payload() for o in rows]

    async def user_trades(self, p: Params) -> Any:
        """Trades within a window of at most 7 days (the last 7 by default), or from
        ``fromId`` on with no time window (see :func:`~pms.sim.validation.trades_window`)."""
        symbol = self.state.market(require(p, "symbol")).spec.symbol
        from_id = int_param(p, "fromId", 0) or 0
        start, end = trades_window(p, self.state.clock.ms())
        limit = min(max(int_param(p, "limit", 500) or 500, 1), 1000)
        order_id = int_param(p, "orderId", 0) or 0  # Binance: only together with symbol
        rows = [
            t for t in self.state.engine.trades
            if t.spec.symbol == symbol and t.trade_id >= from_id and start <= t.time <= end
            and (not order_id or t.order_id == order_id)
        ]  # fmt: skip
        rows = rows[:limit] if from_id else rows[-limit:]
        return [t.payload() for t in rows]

    # --- account -------------------------------------------------------------------------
    async def income(self, p: Params) -> Any:
        """Oldest first within ``startTime``..``endTime`` (the last 7 days if neither is sent),
        ``limit`` per ``page``. ``[{"symbol":"BTCUSDT","incomeType":"FUNDING_FEE",
        "income":"-6.00000000","asset":"USDT","info":"FUNDING_FEE","time":1767225600000,
        "tranId":1767225600000001,"tradeId":""}]``"""
        symbol = self.state.market(p["symbol"]).spec.symbol if p.get("symbol") else None
        kind = p.get("incomeType", "").upper() or None
        if kind is not None and kind not in INCOME_TYPES:
            raise errors.bad_param("incomeType")
        start, end = int_param(p, "startTime"), int_param(p, "endTime")
        limit = limit_param(p, 100, 1000)
        page = int_param(p, "page", 1) or 0
        if page < 1:
            raise errors.bad_param("page")
        now = self.state.clock.ms()
        rows = self.state.funding.incomes(symbol, kind, start, end, limit, page, now)
        return [i.payload() for i in rows]

    async def position_risk(self, p: Params) -> Any:
        """v3: only symbols with a position or open orders, a requested ``symbol`` included
        (a flat one answers ``[]``)."""
        return self._position_rows(p, keep_flat=False)

    async def position_risk_v2(self, p: Params) -> Any:
        """v2: as v3, except that a requested ``symbol`` is answered even when flat."""
        return self._position_rows(p, keep_flat=bool(p.get("symbol")))

    def _position_rows(self, p: Params, *, keep_flat: bool) -> list[dict[str, object]]:
        oim = self.state.engine.open_order_im()
        acct = self.state.account
        return [
            acct.position_risk(s, oim.get(s, Decimal(0)))
            for s in self._symbols(p)
            if keep_flat or acct.positions[s].amt != 0 or oim.get(s)
        ]

    async def account(self, p: Params) -> Any:
        return self.state.account.account_v3(self.state.engine.open_order_im())

    async def balance(self, p: Params) -> Any:
        a = self.state.account.account_v3(self.state.engine.open_order_im())
        asset = a["assets"][0]  # type: ignore[index]
        return [
            {"accountAlias": "SimAccount", "asset": "USDT",
             "balance": asset["walletBalance"], "crossWalletBalance": asset["crossWalletBalance"],
             "crossUnPnl": asset["crossUnPnl"], "availableBalance": asset["availableBalance"],
             "maxWithdrawAmount": asset["maxWithdrawAmount"], "marginAvailable": True,
             "updateTime": asset["updateTime"]}
        ]  # fmt: skip


def _best(market: Market, buy_side: bool) -> Level:
    """The best level with quantity, as the bookTicker stream and matching see it. The top
    price may have been taken whole (taken liquidity stays taken until the mid moves); a side
    taken to its last walkable level shows its top price with no quantity."""
    level = market.best_level(buy_side)
    if level is not None:
        return level
    return (market.best_bid() if buy_side else market.best_ask()), Decimal(0)


def _param_text(value: object) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (dict, list)):
        return orjson.dumps(value).decode()
    return str(value)


def _guard(fn: Callable[[Params], dict[str, Any]], params: Params) -> dict[str, Any]:
    """One batch item: its result, or its Binance error body (the others still run)."""
    try:
        return fn(params)
    except errors.SimError as exc:
        return exc.body()


__all__ = ["Rest", "Route", "client_id"]
