"""The Binance USDⓈ-M adapter: ccxt ``binanceusdm`` as signer and error mapper.

We call ccxt's implicit endpoints (``fapiPrivatePostOrder`` ...) through :class:`SignedRest`
(ccxt signs and maps errors; a keep-alive connection per thread carries the bytes, see
``docs/exchange.md``) and parse Binance's own payloads, whose numbers are strings, so no amount
ever passes through a float. The same code talks to Binance and to ``pms sim``: only the base
URL differs (see ``ccxt_factory``).
"""

from __future__ import annotations

import threading
import time
from collections import OrderedDict
from collections.abc import Callable
from datetime import UTC, datetime
from decimal import Decimal
from typing import Any

import ccxt
import structlog

from pms.domain.enums import OrderType, Side
from pms.domain.instrument import Instrument, LeverageBracket
from pms.domain.numbers import parse_decimal
from pms.domain.symbols import from_exchange_id, perpetual_of, to_exchange_id
from pms.errors import ExchangeRejected, ExchangeUnavailable, PmsError, RateLimited
from pms.exchange.ccxt_factory import make_binanceusdm
from pms.exchange.errors import (
    OrderUnknownToExchange,
    RateLimitPause,
    UnknownOrderState,
    translate,
)
from pms.exchange.model import (
    ExchangeOrder,
    ExchangePosition,
    FundingIncome,
    FundingRate,
    OrderRequest,
    TradeReport,
)
from pms.exchange.rest import SignedRest
from pms.exchange.transport import IDLE_S, KeepAliveTransport

log = structlog.get_logger(__name__)

# After an unknown outcome, ask by clientOrderId this many times before giving up.
RESOLVE_ATTEMPTS = 4
RESOLVE_BACKOFF_S = 0.05
# userTrades of one order: a lower bound on its trades' times, remembered from the order
# responses (bounded; a miss only means the query goes without ``startTime``).
TRADE_HINTS_MAX = 10_000
# A market order's fills happen while it is placed: its trades are no older than the
# placement response's ``updateTime`` minus this margin (a trade it misses is not lost: the
# order stays open until the user stream or order-sync books it).
PLACEMENT_MARGIN_MS = 100
# ``GET /fapi/v1/userTrades``: at most 7 days between startTime and endTime, 1000 rows.
TRADE_WINDOW_MS = 7 * 24 * 3600 * 1000
TRADES_LIMIT = 1000
# ``GET /fapi/v1/fundingRate`` and ``/fapi/v1/income``: at most 1000 rows a page.
PAGE = 1000


def _d(value: Any, field: str) -> Decimal:
    return parse_decimal(value if value not in (None, "") else "0", field)


def parse_order(raw: dict[str, Any]) -> ExchangeOrder:
    """Parse an order payload.

    Sample::

        {"orderId": 4011, "symbol": "BTCUSDT", "status": "FILLED", "clientOrderId": "pms-17",
         "price": "0", "avgPrice": "60000.10", "origQty": "0.010", "executedQty": "0.010",
         "cumQuote": "600.001", "timeInForce": "GTC", "type": "MARKET", "reduceOnly": false,
         "side": "BUY", "positionSide": "BOTH", "updateTime": 1764000000000}
    """
    return ExchangeOrder(
        symbol=from_exchange_id(raw["symbol"]),
        exchange_order_id=str(raw["orderId"]),
        client_order_id=str(raw.get("clientOrderId", "")),
        status=str(raw["status"]),
        side=Side(raw["side"]),
        type=str(raw.get("type", "")),
        qty=_d(raw.get("origQty"), "origQty"),
        price=_d(raw.get("price"), "price"),
        executed_qty=_d(raw.get("executedQty"), "executedQty"),
        avg_price=_d(raw.get("avgPrice"), "avgPrice"),
        reduce_only=bool(raw.get("reduceOnly", False)),
        update_time_ms=int(raw.get("updateTime") or raw.get("time") or 0),
    )


def parse_user_trade(raw: dict[str, Any]) -> TradeReport:
    """Parse one ``GET /fapi/v1/userTrades`` item.

    Sample::

        {"buyer": true, "commission": "0.30000050", "commissionAsset": "USDT", "id": 698759,
         "maker": false, "orderId": 4011, "price": "60000.10", "qty": "0.010",
         "quoteQty": "600.001", "realizedPnl": "0", "side": "BUY", "positionSide": "BOTH",
         "symbol": "BTCUSDT", "time": 1764000000000}
    """
    return TradeReport(
        symbol=from_exchange_id(raw["symbol"]),
        trade_id=str(raw["id"]),
        exchange_order_id=str(raw["orderId"]),
        client_order_id=None,
        side=Side(raw["side"]),
        qty=_d(raw["qty"], "qty"),
        price=_d(raw["price"], "price"),
        fee=_d(raw.get("commission"), "commission"),
        fee_asset=str(raw.get("commissionAsset", "USDT")),
        is_maker=bool(raw.get("maker", False)),
        traded_at=datetime.fromtimestamp(int(raw["time"]) / 1000, UTC),
    )


def parse_funding_rate(symbol: str, raw: dict[str, Any]) -> FundingRate:
    mark = raw.get("markPrice")
    return FundingRate(
        symbol=symbol,
        funding_time_ms=int(raw["fundingTime"]),
        rate=_d(raw["fundingRate"], "fundingRate"),
        mark_price=_d(mark, "markPrice") if mark not in (None, "") else None,
    )


def parse_funding_income(symbol: str, raw: dict[str, Any]) -> FundingIncome:
    if raw.get("asset", "USDT") != "USDT":
        raise ValueError(f"funding income in {raw.get('asset')}, not USDT: {raw}")
    return FundingIncome(
        symbol=symbol,
        amount=_d(raw["income"], "income"),
        time_ms=int(raw["time"]),
        tran_id=str(raw["tranId"]),
    )


def parse_instrument(raw: dict[str, Any], brackets: list[dict[str, Any]]) -> Instrument:
    """Parse one ``exchangeInfo.symbols[]`` item plus its ``leverageBracket`` tiers.

    Sample (abridged)::

        {"symbol": "BTCUSDT", "status": "TRADING", "contractType": "PERPETUAL",
         "baseAsset": "BTC", "quoteAsset": "USDT", "marginAsset": "USDT",
         "filters": [{"filterType": "PRICE_FILTER", "minPrice": "0.10", "maxPrice": "4529764",
                      "tickSize": "0.10"},
                     {"filterType": "LOT_SIZE", "minQty": "0.001", "maxQty": "1000",
                      "stepSize": "0.001"},
                     {"filterType": "MARKET_LOT_SIZE", "minQty": "0.001", "maxQty": "120",
                      "stepSize": "0.001"},
                     {"filterType": "MIN_NOTIONAL", "notional": "100"},
                     {"filterType": "PERCENT_PRICE", "multiplierUp": "1.0500",
                      "multiplierDown": "0.9500", "multiplierDecimal": "4"}]}
        brackets: [{"bracket": 1, "initialLeverage": 125, "notionalCap": 50000,
                    "notionalFloor": 0, "maintMarginRatio": 0.004, "cum": 0.0}, ...]
    """
    filters = {f["filterType"]: f for f in raw.get("filters", [])}
    price_f = filters.get("PRICE_FILTER", {})
    lot = filters.get("LOT_SIZE", {})
    market_lot = filters.get("MARKET_LOT_SIZE", lot)
    notional = filters.get("MIN_NOTIONAL", {})
    percent = filters.get("PERCENT_PRICE", {})
    parsed = tuple(
        LeverageBracket(
            bracket=int(b["bracket"]),
            initial_leverage=int(b["initialLeverage"]),
            notional_floor=_d(b["notionalFloor"], "notionalFloor"),
            notional_cap=_d(b["notionalCap"], "notionalCap"),
            maint_margin_ratio=_d(b["maintMarginRatio"], "maintMarginRatio"),
            cum=_d(b.get("cum", 0), "cum"),
        )
        for b in sorted(brackets, key=lambda b: int(b["bracket"]))
    )
    return Instrument(
        symbol=from_exchange_id(raw["symbol"]),
        exchange_id=raw["symbol"],
        base=raw["baseAsset"],
        quote=raw["quoteAsset"],
        tick_size=_d(price_f.get("tickSize"), "tickSize"),
        step_size=_d(lot.get("stepSize"), "stepSize"),
        min_qty=_d(lot.get("minQty"), "minQty"),
        max_qty=_d(lot.get("maxQty"), "maxQty"),
        market_step_size=_d(market_lot.get("stepSize"), "stepSize"),
        market_min_qty=_d(market_lot.get("minQty"), "minQty"),
        market_max_qty=_d(market_lot.get("maxQty"), "maxQty"),
        min_notional=_d(notional.get("notional"), "notional"),
        min_price=_d(price_f.get("minPrice"), "minPrice"),
        max_price=_d(price_f.get("maxPrice"), "maxPrice"),
        trading=raw.get("status") == "TRADING",
        brackets=parsed,
        percent_up=_d(percent["multiplierUp"], "multiplierUp") if percent else None,
        percent_down=_d(percent["multiplierDown"], "multiplierDown") if percent else None,
    )


class BinanceExchange:
    """Synchronous adapter (workers are threads). Thread-safe: one connection per thread.

    ``timeout_ms`` bounds connecting and, separately, waiting for a whole response;
    ``idle_s`` is how long an idle connection is trusted before a fresh one replaces it.
    """

    def __init__(
        self,
        base_url: str | None,
        api_key: str,
        secret: str,
        *,
        timeout_ms: int = 5000,
        idle_s: float = IDLE_S,
        monotonic: Callable[[], float] = time.monotonic,
    ) -> None:
        self._ex = make_binanceusdm(base_url, api_key, secret, timeout_ms=timeout_ms)
        self._pause = RateLimitPause(monotonic)
        # ccxt's client-side throttle sleeps ~50 ms per call (2 s for an all-symbol open
        # orders query): too slow for order entry. Binance's own limits are enforced by
        # the exchange (429/418 → RATE_LIMITED with Retry-After), which we surface.
        self._ex.enableRateLimit = False
        self.transport = KeepAliveTransport(
            timeout_ms / 1000,
            idle_s=idle_s,
            headers={
                "User-Agent": str(self._ex.userAgent or "pms"),
                "Accept": "*/*",
                "Accept-Encoding": "gzip, deflate",
            },
        )
        self._rest = SignedRest(self._ex, self.transport)
        self._time_synced = False
        self._lock = threading.Lock()
        self._trades_since: OrderedDict[str, int] = OrderedDict()

    # -- plumbing -------------------------------------------------------------------------

    def _call(
        self, action: str, method: str, params: dict[str, Any], *, sign_by_ms: int | None = None
    ) -> Any:
        self._pause.check(action, placed=False)  # nothing sent: nothing placed, for sure
        self._sync_time()
        self._in_time(action, sign_by_ms)
        try:
            return self._rest.call(method, params)
        except ccxt.InvalidNonce:
            # -1021: rejected before processing, so re-syncing and sending again is safe.
            self._time_synced = False
            self._sync_time()
            self._in_time(action, sign_by_ms)
            try:
                return self._rest.call(method, params)
            except Exception as exc:
                raise self._translate(exc, action) from exc
        except Exception as exc:
            raise self._translate(exc, action) from exc

    @staticmethod
    def _in_time(action: str, sign_by_ms: int | None) -> None:
        """Refuse to sign a request past its deadline: nothing was sent (an earlier attempt,
        if any, was refused before processing), so it is not placed, for sure."""
        if sign_by_ms is not None and time.time() * 1000 > sign_by_ms:
            raise ExchangeUnavailable(
                f"{action}: too late to send (the request could arrive after a retry decided"
                " it was not placed); nothing was sent",
                {"placed": False},
            )

    def _translate(self, exc: Exception, action: str) -> PmsError:
        if isinstance(exc, PmsError):
            return exc
        retry_after = self._rest.last_headers().get("retry-after")
        self._pause.after(exc, retry_after, self._rest.last_status())
        return translate(exc, action=action, retry_after=retry_after)

    def _sync_time(self) -> None:
        if self._time_synced:
            return
        with self._lock:
            if self._time_synced:
                return
            try:
                self._ex.load_time_difference()
            except Exception as exc:
                raise self._translate(exc, "time sync") from exc
            self._time_synced = True

    # -- reference data -------------------------------------------------------------------

    def load_instruments(self) -> dict[str, Instrument]:
        info = self._call("load markets", "fapiPublicGetExchangeInfo", {})
        brackets_raw = self._call("load leverage brackets", "fapiPrivateGetLeverageBracket", {})
        brackets = {b["symbol"]: b.get("brackets", []) for b in brackets_raw}
        instruments = {}
        for raw in info.get("symbols", []):
            if raw.get("contractType") != "PERPETUAL" or raw.get("quoteAsset") != "USDT":
                continue
            inst = parse_instrument(raw, brackets.get(raw["symbol"], []))
            instruments[inst.symbol] = inst
        return instruments

    def fetch_mark_price(self, symbol: str) -> Decimal:
        raw = self._call(
            "mark price", "fapiPublicGetPremiumIndex", {"symbol": to_exchange_id(symbol)}
        )
        try:
            mark = parse_decimal(raw.get("markPrice"), "markPrice")
        except ValueError:
            mark = Decimal(0)
        if not mark > 0:
            # A missing, empty or zero field is no price (read as 0 it would make every
            # notional and margin 0): retryable, like an exchange that did not answer.
            raise ExchangeUnavailable(f"the exchange gave no usable mark price for {symbol}")
        return mark

    # -- orders ---------------------------------------------------------------------------

    def create_order(self, request: OrderRequest) -> ExchangeOrder:
        params: dict[str, Any] = {
            "symbol": to_exchange_id(request.symbol),
            "side": request.side.value,
            "type": request.type.value,
            "quantity": format(request.qty, "f"),
            "newClientOrderId": request.client_order_id,
            "newOrderRespType": "RESULT",
        }
        if request.type is OrderType.LIMIT:
            if request.price is None:
                raise ExchangeRejected("a limit order needs a price")
            params["price"] = format(request.price, "f")
            params["timeInForce"] = request.time_in_force.value if request.time_in_force else "GTC"
        if request.reduce_only:
            params["reduceOnly"] = "true"
        try:
            raw = self._call(
                "place order", "fapiPrivatePostOrder", params, sign_by_ms=request.sign_by_ms
            )
            placed = parse_order(raw)
            if raw.get("updateTime"):
                self._hint_trades_since(
                    placed.exchange_order_id, int(raw["updateTime"]) - PLACEMENT_MARGIN_MS
                )
            return placed
        except UnknownOrderState:
            # Never re-send blindly: the order may exist. Ask by clientOrderId.
            found = self._resolve(request.symbol, request.client_order_id)
            if found is None:
                # Not there *yet* is not "never": the signed request may still reach the
                # exchange within its recvWindow (a slow network, a queue at the gateway).
                raise UnknownOrderState(
                    "the exchange did not answer and does not show the order yet; it may still"
                    " arrive: a retry after the grace period, or order-sync, settles it",
                    {"clientOrderId": request.client_order_id, "placed": None},
                ) from None
            return found

    def _resolve(self, symbol: str, client_order_id: str) -> ExchangeOrder | None:
        """The order by clientOrderId; None if the exchange does not show it. Any failure to
        ask (unreachable, rate limited, an unexpected refusal) is an unknown outcome: the
        order may exist, so nothing may treat it as refused."""
        last: PmsError | None = None
        for attempt in range(RESOLVE_ATTEMPTS):
            try:
                return self.fetch_order(symbol, client_order_id)
            except RateLimited as exc:
                last = exc  # asking again now would only deepen the limit
                break
            except PmsError as exc:
                last = exc
                time.sleep(RESOLVE_BACKOFF_S * (2**attempt))
        assert last is not None
        raise UnknownOrderState(
            "the order's outcome could not be read from the exchange; a retry after the grace"
            " period, or order-sync, settles it",
            {"clientOrderId": client_order_id, "placed": None, "cause": last.code},
        ) from last

    def fetch_order(self, symbol: str, client_order_id: str) -> ExchangeOrder | None:
        params = {"symbol": to_exchange_id(symbol), "origClientOrderId": client_order_id}
        try:
            raw = self._call("fetch order", "fapiPrivateGetOrder", params)
        except OrderUnknownToExchange:
            return None
        found = parse_order(raw)
        if raw.get("time"):  # creation time: no trade of the order is older
            self._hint_trades_since(found.exchange_order_id, int(raw["time"]))
        return found

    def _hint_trades_since(self, exchange_order_id: str, since_ms: int) -> None:
        with self._lock:
            self._trades_since[exchange_order_id] = since_ms
            while len(self._trades_since) > TRADE_HINTS_MAX:
                self._trades_since.popitem(last=False)

    def cancel_order(self, symbol: str, client_order_id: str) -> ExchangeOrder | None:
        params = {"symbol": to_exchange_id(symbol), "origClientOrderId": client_order_id}
        try:
            return parse_order(self._call("cancel order", "fapiPrivateDeleteOrder", params))
        except OrderUnknownToExchange:
            return None

    def amend_order(
        self, symbol: str, client_order_id: str, side: Side, qty: Decimal, price: Decimal
    ) -> ExchangeOrder:
        params = {
            "symbol": to_exchange_id(symbol),
            "origClientOrderId": client_order_id,
            "side": side.value,
            "quantity": format(qty, "f"),
            "price": format(price, "f"),
        }
        return parse_order(self._call("amend order", "fapiPrivatePutOrder", params))

    def fetch_open_orders(self, symbol: str | None = None) -> list[ExchangeOrder]:
        params = {"symbol": to_exchange_id(symbol)} if symbol else {}
        rows = self._call("open orders", "fapiPrivateGetOpenOrders", params)
        # Orders in contracts the engine does not trade (quarterlies) are not ours to settle.
        return [parse_order(o) for o in rows if perpetual_of(str(o.get("symbol", "")))]

    def fetch_order_trades(self, symbol: str, exchange_order_id: str) -> list[TradeReport]:
        """The trades of one order: ``orderId`` (Binance filters by it), bounded below by the
        order's time when an order response told us (``startTime``: a venue that ignores
        ``orderId``, like ``pms sim``, then returns only recent trades instead of the last 500
        of the symbol), and filtered by order id here as well."""
        params: dict[str, Any] = {
            "symbol": to_exchange_id(symbol),
            "orderId": exchange_order_id,
            "limit": 1000,
        }
        with self._lock:
            since = self._trades_since.get(exchange_order_id)
        if since is not None:
            params["startTime"] = since
        rows = self._call("order trades", "fapiPrivateGetUserTrades", params)
        return [parse_user_trade(t) for t in rows if str(t.get("orderId")) == exchange_order_id]

    def fetch_order_trades_between(
        self, symbol: str, exchange_order_id: str, start_ms: int, end_ms: int
    ) -> list[TradeReport]:
        """The trades of one order within ``[start_ms, end_ms]``: Binance answers at most 7
        days per query and 1000 trades, so the span is walked in windows of at most 7 days,
        and a window that comes back full is halved until it does not (an operator's
        resync: pms.sync.orders.resync_order)."""
        out: dict[str, TradeReport] = {}
        pending = []
        start = start_ms
        while start <= end_ms:
            stop = min(start + TRADE_WINDOW_MS - 1, end_ms)
            pending.append((start, stop))
            start = stop + 1
        while pending:
            start, stop = pending.pop(0)
            params = {
                "symbol": to_exchange_id(symbol),
                "orderId": exchange_order_id,
                "startTime": start,
                "endTime": stop,
                "limit": TRADES_LIMIT,
            }
            rows = self._call("order trades", "fapiPrivateGetUserTrades", params)
            if len(rows) >= TRADES_LIMIT:
                if stop > start:
                    middle = (start + stop) // 2
                    pending[:0] = [(start, middle), (middle + 1, stop)]
                    continue
                log.error(
                    "1000 trades of one order in one millisecond: later ones may be missing",
                    symbol=symbol,
                    exchangeOrderId=exchange_order_id,
                    at=start,
                )
            for row in rows:
                if str(row.get("orderId")) == exchange_order_id:
                    trade = parse_user_trade(row)
                    out[trade.trade_id] = trade
        return sorted(out.values(), key=lambda t: (t.traded_at, t.trade_id))

    def fetch_trades_since(self, symbol: str, since_ms: int) -> list[TradeReport]:
        params = {"symbol": to_exchange_id(symbol), "startTime": since_ms, "limit": 1000}
        return [
            parse_user_trade(t)
            for t in self._call("user trades", "fapiPrivateGetUserTrades", params)
        ]

    def set_leverage(self, symbol: str, leverage: int) -> None:
        self._call(
            "set leverage",
            "fapiPrivatePostLeverage",
            {"symbol": to_exchange_id(symbol), "leverage": leverage},
        )

    def fetch_positions(self) -> list[ExchangePosition]:
        """``GET /fapi/v3/positionRisk``.

        Sample item::

            {"symbol": "BTCUSDT", "positionSide": "BOTH", "positionAmt": "0.010",
             "entryPrice": "60000.1", "markPrice": "60100.0", "unRealizedProfit": "0.999", ...}
        """
        rows = self._call("positions", "fapiPrivateV3GetPositionRisk", {})
        # The master account may also hold contracts the engine does not trade (a quarterly
        # BTCUSDT_260626 opened by hand): they are no sub-account's, so not compared.
        rows = [r for r in rows if perpetual_of(str(r.get("symbol", "")))]
        return [
            ExchangePosition(
                symbol=from_exchange_id(r["symbol"]),
                qty=_d(r["positionAmt"], "positionAmt"),
                entry_price=_d(r.get("entryPrice"), "entryPrice"),
                mark_price=_d(r.get("markPrice"), "markPrice"),
            )
            for r in rows
        ]

    # -- funding --------------------------------------------------------------------------

    def fetch_funding_rates(self, symbol: str, start_ms: int, end_ms: int) -> list[FundingRate]:
        """``GET /fapi/v1/fundingRate`` from ``start_ms`` to ``end_ms`` (inclusive), oldest
        first, in pages of 1,000.

        Sample item::

            {"symbol": "BTCUSDT", "fundingRate": "0.00010000", "fundingTime": 1767225600000,
             "markPrice": "60000.00000000"}
        """
        out: dict[int, FundingRate] = {}
        start = start_ms
        while start <= end_ms:
            params = {
                "symbol": to_exchange_id(symbol),
                "startTime": start,
                "endTime": end_ms,
                "limit": PAGE,
            }
            rows = self._call("funding rates", "fapiPublicGetFundingRate", params)
            for row in rows:
                rate = parse_funding_rate(symbol, row)
                out[rate.funding_time_ms] = rate
            if len(rows) < PAGE:
                break
            start = max(r.funding_time_ms for r in out.values()) + 1
        return sorted(out.values(), key=lambda r: r.funding_time_ms)

    def fetch_funding_income(self, symbol: str, start_ms: int, end_ms: int) -> list[FundingIncome]:
        """``GET /fapi/v1/income`` (``incomeType=FUNDING_FEE``) from ``start_ms`` to
        ``end_ms`` (inclusive), oldest first, in pages of 1,000; one entry per tranId.

        Sample item::

            {"symbol": "BTCUSDT", "incomeType": "FUNDING_FEE", "income": "-6.00000000",
             "asset": "USDT", "info": "FUNDING_FEE", "time": 1767225600000,
             "tranId": 9689322392, "tradeId": ""}
        """
        out: dict[str, FundingIncome] = {}
        start = start_ms
        while start <= end_ms:
            params = {
                "symbol": to_exchange_id(symbol),
                "incomeType": "FUNDING_FEE",
                "startTime": start,
                "endTime": end_ms,
                "limit": PAGE,
            }
            rows = self._call("funding income", "fapiPrivateGetIncome", params)
            for row in rows:
                income = parse_funding_income(symbol, row)
                out[income.tran_id] = income
            if len(rows) < PAGE:
                break
            # Entries of one millisecond may straddle the page: asked again, kept once.
            start = max(int(row["time"]) for row in rows)
            if start == params["startTime"]:
                break  # a whole page within one millisecond: nothing more to ask for
        return sorted(out.values(), key=lambda i: (i.time_ms, i.tran_id))

    def close(self) -> None:
        self.transport.close()
        self._ex.session.close()  # ccxt's own (unused) requests session
