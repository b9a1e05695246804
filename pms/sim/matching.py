"""The matching engine: orders against the synthetic book, fills into the master account.

Taker flow (new order, amend that crosses): walk the opposite side of the book best first,
each level at its own price, taking liquidity (remembered until the mid moves). Maker flow
(after every mid move): a resting order that the book now crosses fills at its own price, up
to the liquidity of the crossing levels, so a thin book gives a partial fill.

Every state change produces an ``ORDER_TRADE_UPDATE`` in order; fills are followed by an
``ACCOUNT_UPDATE``. Events go to a :class:`Sink` (the WebSocket hub).
"""

from __future__ import annotations

import itertools
from collections.abc import Callable
from decimal import Decimal
from typing import Protocol

from pms.sim import errors
from pms.sim.account import Account
from pms.sim.market import WALK_DEPTH, Market
from pms.sim.orders import (
    Order,
    OrderRequest,
    OrderType,
    Status,
    Tif,
    Trade,
    order_trade_update,
)

ZERO = Decimal(0)
MAKER_FEE = Decimal("0.0002")
TAKER_FEE = Decimal("0.0005")
MAX_WALK_LEVELS = WALK_DEPTH
MAX_MODIFY = 10000


class Sink(Protocol):
    def user_event(self, event: dict[str, object]) -> None: ...

    def agg_trade(self, market: Market, trade: Trade) -> None: ...

    def book_changed(self, market: Market) -> None: ...


class Engine:
    def __init__(
        self,
        markets: dict[str, Market],
        account: Account,
        sink: Sink,
        now: Callable[[], int],
    ) -> None:
        self.markets = markets
        self.account = account
        self.sink = sink
        self.now = now
        self.orders: dict[int, Order] = {}
        self._open: dict[int, Order] = {}  # index of open orders (closed ones pruned lazily)
        self.by_client: dict[tuple[str, str], int] = {}
        self.trades: list[Trade] = []
        self.drop_trade_events = 0
        self._ids = itertools.count(8_000_000_001)
        self._seq = itertools.count(1)

    def start_ids(self, base: int) -> None:
        """Order ids continue from ``base`` (see ``SimConfig.id_base``)."""
        self._ids = itertools.count(base + 1)

    # --- queries ---------------------------------------------------------------------
    def open_orders(self, symbol: str | None = None) -> list[Order]:
        closed = [oid for oid, o in self._open.items() if not o.status.is_open]
        for oid in closed:
            del self._open[oid]
        return [o for o in self._open.values() if symbol is None or o.symbol == symbol]

    def find(self, symbol: str, order_id: int | None, client_id: str | None) -> Order | None:
        if order_id is not None:
            order = self.orders.get(order_id)
            return order if order and order.symbol == symbol else None
        if client_id is not None:
            oid = self.by_client.get((symbol, client_id))
            return self.orders.get(oid) if oid is not None else None
        return None

    def open_order_im(self) -> dict[str, Decimal]:
        out: dict[str, Decimal] = {}
        for o in self.open_orders():
            if o.reduce_only:
                continue
            lev = self.account.leverage[o.symbol]
            out[o.symbol] = out.get(o.symbol, ZERO) + o.remaining * o.price / lev
        return out

    def available(self) -> Decimal:
        return self.account.available(sum(self.open_order_im().values(), ZERO))

    # --- commands --------------------------------------------------------------------
    def place(self, req: OrderRequest) -> Order:
        market = self.markets[req.symbol]
        spec = market.spec
        if (req.symbol, req.client_id) in self.by_client:
            existing = self.orders[self.by_client[(req.symbol, req.client_id)]]
            if existing.status.is_open:
                raise errors.duplicate_client_id()
        pos = self.account.positions[req.symbol].amt
        if req.reduce_only and (pos == 0 or (pos > 0) == req.buy):
            raise errors.reduce_only_rejected()
        if req.tif is Tif.GTX and req.price is not None and self._crosses(market, req):
            raise errors.post_only_rejected()
        if len(self.open_orders(req.symbol)) >= spec.max_num_orders:
            raise errors.max_open_orders()
        if not req.reduce_only:
            at = req.price if req.price is not None else market.mark
            self._check_position_cap(market, req.buy, req.qty, at)
            self._check_margin(market, req, pos)
        now = self.now()
        price = req.price if req.price is not None else ZERO
        order = Order(
            order_id=next(self._ids),
            client_id=req.client_id,
            spec=spec,
            buy=req.buy,
            type=req.type,
            tif=req.tif,
            price=price,
            orig_qty=req.qty,
            reduce_only=req.reduce_only,
            time=now,
            update_time=now,
            seq=next(self._seq),
        )
        self.orders[order.order_id] = order
        self._open[order.order_id] = order
        self.by_client[(req.symbol, req.client_id)] = order.order_id
        self._emit(order, "NEW")
        if req.tif is Tif.FOK and self._takeable(market, order) < self._fillable(order):
            self._finish(order, Status.EXPIRED, "EXPIRED")
            return order
        self._take(market, order)
        if order.status.is_open and (order.type is OrderType.MARKET or order.tif is Tif.IOC):
            self._finish(order, Status.EXPIRED, "EXPIRED")
        return order

    def cancel(self, order: Order) -> Order:
        if not order.status.is_open:
            raise errors.unknown_order()
        self._finish(order, Status.CANCELED, "CANCELED")
        return order

    def amend(self, order: Order, qty: Decimal, price: Decimal) -> Order:
        """Binance modify: LIMIT only; the order is re-queued; may cancel or match."""
        if order.type is not OrderType.LIMIT:
            raise errors.SimError(-5025, "Only limit order is supported.")
        if not order.status.is_open:
            raise errors.unknown_order()
        if qty == order.orig_qty and price == order.price:
            raise errors.SimError(-5027, "No need to modify the order.")
        if order.modify_count >= MAX_MODIFY:
            raise errors.SimError(-5026, "Exceed maximum modify order limit.")
        market = self.markets[order.symbol]
        if order.executed > 0 and qty <= order.executed:
            self._finish(order, Status.CANCELED, "CANCELED")
            return order
        if not order.reduce_only:
            self._check_position_cap(market, order.buy, qty - order.executed, price, order)
        probe = OrderRequest(order.symbol, order.buy, order.type, order.tif, qty, price, False, "")
        if order.tif is Tif.GTX and self._crosses(market, probe):
            self._finish(order, Status.CANCELED, "CANCELED")
            return order
        order.orig_qty, order.price = qty, price
        order.modify_count += 1
        order.seq = next(self._seq)
        order.update_time = self.now()
        self._emit(order, "AMENDMENT")
        self._take(market, order)
        return order

    def on_market_move(self, symbol: str) -> None:
        """Fill resting orders that the moved book now crosses (maker fills)."""
        market = self.markets[symbol]
        resting = sorted(
            self.open_orders(symbol),
            key=lambda o: (-o.price if o.buy else o.price, o.seq),
        )
        touched = False
        for order in resting:
            levels = market.iter_levels(not order.buy, MAX_WALK_LEVELS)
            for lvl_price, lvl_qty in levels:
                if (lvl_price > order.price) if order.buy else (lvl_price < order.price):
                    break
                qty = min(order.remaining, lvl_qty, self._fillable(order))
                if qty <= 0:
                    break
                market.consume(lvl_price, qty)
                self._fill(market, order, qty, order.price, maker=True)
                touched = True
                if not order.status.is_open:
                    break
        self.sink.book_changed(market)
        if touched:
            self._after_fills(symbol)

    def reset_position(self, symbol: str, qty: Decimal) -> None:
        self.account.adjust_position(symbol, qty, self.now())
        self.sink.user_event(self.account.account_update([symbol], self.now(), "ADJUSTMENT"))

    # --- internals -------------------------------------------------------------------
    def _crosses(self, market: Market, req: OrderRequest) -> bool:
        """Whether a limit order would trade on arrival: against the first opposite level
        that still has quantity, the level a taker would meet and the book shows as best."""
        assert req.price is not None
        level = market.best_level(not req.buy)
        if level is None:
            return False
        return req.price >= level[0] if req.buy else req.price <= level[0]

    def _check_position_cap(
        self, market: Market, buy: bool, qty: Decimal, price: Decimal, skip: Order | None = None
    ) -> None:
        """-2027 when the position could grow past the bracket cap at the current leverage:
        the position (at mark) plus every open order on the same side and this one, as if
        all filled (``skip``: the order being amended, counted with its new values)."""
        symbol = market.spec.symbol
        cap = market.spec.max_notional(self.account.leverage[symbol])
        amt = self.account.positions[symbol].amt
        exposure = (amt if buy else -amt) * market.mark + qty * price
        for o in self.open_orders(symbol):
            if o.buy == buy and not o.reduce_only and o is not skip:
                exposure += o.remaining * o.price
        if exposure > cap:
            raise errors.max_position_at_leverage()

    def _check_margin(self, market: Market, req: OrderRequest, pos: Decimal) -> None:
        closing = min(req.qty, abs(pos)) if pos and (pos > 0) != req.buy else ZERO
        opening = req.qty - closing
        if opening <= 0:
            return
        ref = market.best_ask() if req.buy else market.best_bid()
        price = req.price if req.price is not None else ref
        required = opening * price / self.account.leverage[req.symbol]
        if required > self.available():
            raise errors.margin_insufficient()

    def _fillable(self, order: Order) -> Decimal:
        """How much of the order may still fill (reduce-only is clipped to the position)."""
        if not order.reduce_only:
            return order.remaining
        pos = self.account.positions[order.symbol].amt
        if pos == 0 or (pos > 0) == order.buy:
            return ZERO
        return min(order.remaining, abs(pos))

    def _limit_ok(self, order: Order, level_price: Decimal) -> bool:
        if order.type is OrderType.MARKET:
            return True
        return level_price <= order.price if order.buy else level_price >= order.price

    def _takeable(self, market: Market, order: Order) -> Decimal:
        total = ZERO
        for price, qty in market.iter_levels(not order.buy, MAX_WALK_LEVELS):
            if not self._limit_ok(order, price):
                break
            total += qty
        return total

    def _take(self, market: Market, order: Order) -> None:
        filled = False
        for price, qty in market.iter_levels(not order.buy, MAX_WALK_LEVELS):
            want = self._fillable(order)
            if want <= 0 or not self._limit_ok(order, price):
                break
            take = min(want, qty)
            market.consume(price, take)
            self._fill(market, order, take, price, maker=False)
            filled = True
        if filled:
            self.sink.book_changed(market)
            self._after_fills(order.symbol)

    def _fill(
        self, market: Market, order: Order, qty: Decimal, price: Decimal, *, maker: bool
    ) -> None:
        now = self.now()
        fee = MAKER_FEE if maker else TAKER_FEE
        result = self.account.apply_fill(order.symbol, order.buy, qty, price, fee, now)
        trade = Trade(
            trade_id=market.next_trade_id(),
            order_id=order.order_id,
            spec=market.spec,
            buy=order.buy,
            price=price,
            qty=qty,
            commission=result.commission,
            realized_pnl=result.realized_pnl,
            maker=maker,
            time=now,
        )
        self.trades.append(trade)
        order.fills.append(trade.trade_id)
        order.executed += qty
        order.cum_quote += qty * price
        order.update_time = now
        order.status = Status.FILLED if order.remaining == 0 else Status.PARTIALLY_FILLED
        if self.drop_trade_events > 0:
            self.drop_trade_events -= 1
        else:
            self.sink.user_event(order_trade_update(order, "TRADE", now, trade))
        self.sink.agg_trade(market, trade)

    def _after_fills(self, symbol: str) -> None:
        now = self.now()
        self.sink.user_event(self.account.account_update([symbol], now, "ORDER"))
        # Reduce-only orders that can no longer reduce are expired, as Binance does.
        for other in self.open_orders(symbol):
            if other.reduce_only and self._fillable(other) == 0:
                self._finish(other, Status.EXPIRED, "EXPIRED")

    def _finish(self, order: Order, status: Status, exec_type: str) -> None:
        order.status = status
        order.update_time = self.now()
        self._emit(order, exec_type)

    def _emit(self, order: Order, exec_type: str) -> None:
        self.sink.user_event(order_trade_update(order, exec_type, self.now()))
