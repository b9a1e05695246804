"""Order use cases: place (market/limit), cancel, cancel all, close position, set leverage.

The shape of every placement:

1. under the sub-account's row lock: validate (pure checks) and persist the intent with its
   ``clientOrderId`` (status PENDING_NEW): the intent reserves margin for the next order;
2. call the exchange (outside any transaction); on an unknown outcome the adapter resolves by
   clientOrderId and never re-sends blindly;
3. record the acknowledgement (exchange order id, status NEW: the order still reserves its
   margin as an open order) in the transaction that stores the command's result, and answer
   with the exchange's view (status, executed quantity, average price; SPEC §3.3: "ok means
   the exchange accepted it; fills arrive as events");
4. then book the fills the exchange reports for that order through the one booking path
   (idempotent by trade id); the order takes its terminal status once they are booked;
5. publish events after each commit.

A command from a gateway answers after step 3 (a :class:`~pms.commands.runner.Deferred`);
engine-initiated orders (close, liquidation, ADL) run all steps before returning. While a
streamer's user stream is connected (``stream_books()``), a gateway command skips step 4: the
stream reports the same fills (with trade ids and fees) and the streamer books them, so the
exchange is not asked for them twice and the fill is not booked twice. If step 4 is lost (the
worker dies, the exchange does not answer, the stream drops), the order stays open and the
user stream or order-sync books its fills. A redelivered command finds its intent by
requestId and continues from step 2 or 4.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from datetime import datetime, timedelta
from decimal import Decimal, InvalidOperation
from typing import Any

import structlog
from sqlalchemy import bindparam, select, text
from sqlalchemy.orm import Session, sessionmaker

from pms.accounts.ledger import AccountRow, lock_account
from pms.clock import Clock
from pms.commands import schemas as cmd
from pms.commands.runner import Deferred
from pms.db.folding import execute_and_commit
from pms.db.models import Order, Position, RiskRules, SubAccount
from pms.db.session import unit_of_work
from pms.domain.enums import OrderStatus, OrderType, Side, TimeInForce
from pms.domain.numbers import is_price, quantize_down, to_wire
from pms.errors import (
    ExchangeRejected,
    ExchangeUnavailable,
    Forbidden,
    LeverageTooHigh,
    NotFound,
    PmsError,
    RetryableError,
    ValidationError,
)
from pms.exchange.ccxt_factory import RECV_WINDOW_MS
from pms.exchange.errors import UnknownOrderState
from pms.exchange.model import Exchange, ExchangeOrder, OrderRequest, TradeReport
from pms.execution import views
from pms.execution.booking import Booked, book_fill, book_order_fill
from pms.execution.context import context_from_rows, lock_and_read_order_context
from pms.execution.instruments import InstrumentCache
from pms.execution.notify import Notifier
from pms.marketdata.prices import PriceService
from pms.messaging.events import EventType
from pms.risk.context import OrderIntent, Quote
from pms.risk.margin import bracket_max_leverage, notional
from pms.risk.validator import validate

log = structlog.get_logger(__name__)
ORDER_UPDATE = EventType.ORDER_UPDATE

CLIENT_ID_PREFIX = "pms-"
_EXCHANGE_STATUS = {
    "NEW": OrderStatus.NEW,
    "PARTIALLY_FILLED": OrderStatus.PARTIALLY_FILLED,
    "FILLED": OrderStatus.FILLED,
    "CANCELED": OrderStatus.CANCELED,
    "EXPIRED": OrderStatus.EXPIRED,
    "EXPIRED_IN_MATCH": OrderStatus.EXPIRED,
    "REJECTED": OrderStatus.REJECTED,
}


# The intent, with the id the context query drew (its clientOrderId derives from it); its
# created_at is the transaction's now(), which that query returned too. Its updated_at is
# the moment of the INSERT (clock_timestamp(): the transaction may have started seconds
# before, waiting for the account's lock or a price): the placement that follows is signed
# within SIGN_WINDOW of its commit, and PENDING_GRACE counts from it.
_INSERT_INTENT_SQL = """
INSERT INTO orders (id, client_order_id, sub_account_id, symbol, side, type, qty, price,
  reduce_only, post_only, time_in_force, leverage, status, filled_qty, origin, request_id,
  updated_at)
VALUES (%(id)s, %(client_order_id)s, %(sub_account_id)s, %(symbol)s, %(side)s, %(type)s,
  %(qty)s, %(price)s, %(reduce_only)s, %(post_only)s, %(time_in_force)s, %(leverage)s,
  %(status)s, %(filled_qty)s, %(origin)s, %(request_id)s, clock_timestamp())
"""

# A symbol's leverage is the account's for that symbol, held position included (as on
# Binance: changing it re-margins the position, which is how the margin check judges an order
# that asks for one); one statement: the position's row and the remembered choice.
_REMEMBER_LEVERAGE_SQL = """
WITH remargined AS (
  UPDATE positions SET leverage = %(leverage)s, updated_at = now()
  WHERE sub_account_id = %(sub_account_id)s AND symbol = %(symbol)s AND closed_at IS NULL
    AND leverage <> %(leverage)s
)
INSERT INTO symbol_leverage (sub_account_id, symbol, leverage)
VALUES (%(sub_account_id)s, %(symbol)s, %(leverage)s)
ON CONFLICT (sub_account_id, symbol) DO UPDATE SET leverage = EXCLUDED.leverage
"""


# The acknowledgement, in the transaction that stores the command's result. The order stays
# open (NEW) until its fills are booked: until then it reserves margin as an open order.
_ACK_SQL = """
UPDATE orders SET exchange_order_id = %(ack_exchange_order_id)s,
  status = CASE WHEN status = 'PENDING_NEW' THEN 'NEW' ELSE status END,
  updated_at = CASE WHEN status = 'PENDING_NEW' THEN %(ack_at)s ELSE updated_at END
WHERE id = %(ack_id)s
RETURNING id
"""


# Built once: the order row as locked (a copy already in the session is overwritten).
_RESTAMP = text(
    "UPDATE orders SET updated_at = clock_timestamp() WHERE id = :id AND status = 'PENDING_NEW'"
    " RETURNING updated_at"
)
_LOCK_ORDER = (
    select(Order)
    .where(Order.id == bindparam("id"))
    .with_for_update()
    .execution_options(populate_existing=True)
)


def remember_leverage(
    sub_account_id: int, symbol: str, leverage: int
) -> tuple[str, dict[str, Any]]:
    """The statement that stores a sub-account's leverage for a symbol (insert or update) and
    re-margins the position held in it at that leverage."""
    params = {"sub_account_id": sub_account_id, "symbol": symbol, "leverage": leverage}
    return _REMEMBER_LEVERAGE_SQL, params


# An intent's placement is signed within SIGN_WINDOW of the intent's stamp (its updated_at,
# written just before the commit, or by a restamp before a placement again), or not sent at
# all (OrderRequest.sign_by_ms), and the exchange processes a signed request at most its
# recvWindow after its timestamp (RECV_WINDOW_MS), or 1 s early (Binance refuses timestamps
# more than 1 s ahead of its clock). An intent stamped less than the sum ago, plus a second
# for the commit and the clocks of this host and the database, may still be on its way to
# the exchange: not found there, it is neither sent again (a resume waits it out), nor
# cancelled, nor rejected (cancel_order_id; order-sync).
SIGN_WINDOW = timedelta(seconds=1)
PENDING_GRACE = SIGN_WINDOW + timedelta(milliseconds=RECV_WINDOW_MS) + timedelta(seconds=2)


def client_order_id(order_id: int) -> str:
    return f"{CLIENT_ID_PREFIX}{order_id}"


def ack_view(order: Order, acked: ExchangeOrder) -> dict[str, Any]:
    """The order as the exchange acknowledged it: its status, executed quantity and average
    price from the exchange's response (the booked state follows in ``order_update``)."""
    view = views.order_view(order)
    status = _EXCHANGE_STATUS.get(acked.status, OrderStatus.NEW)
    view["exchangeOrderId"] = acked.exchange_order_id
    view["status"] = status.value
    view["filledQty"] = to_wire(acked.executed_qty)
    view["avgPrice"] = to_wire(acked.avg_price) if acked.executed_qty > 0 else None
    return view


def qty_for_notional(
    amount: Decimal, price: Decimal, step: Decimal, symbol: str, *, at_mark: bool
) -> Decimal:
    """The qty on ``step`` that a quote ``amount`` buys at ``price`` (a limit price, or the
    mark for a market order), rounded down.

    Refused as VALIDATION_ERROR when it is less than one step or has more digits than the
    decimal context holds (notional 10000000 at price 1e-18 is 1e25 to 3 places: not an
    order, a typo, and without this check an ``InvalidOperation`` answered INTERNAL). A mark
    that is not a positive number is missing market data (retryable), as in the checks.
    """
    where = "the mark price" if at_mark else "price"
    if not is_price(price):
        raise ExchangeUnavailable(
            f"no usable mark price for {symbol} ({price}) to convert notional; retry shortly",
            {"symbols": [symbol]},
        )
    try:
        qty = quantize_down(amount / price, step)
    except InvalidOperation:
        raise ValidationError(
            f"notional {to_wire(amount)} at {where} {to_wire(price)} is a qty too large for any "
            f"{symbol} order; check notional and price",
            {"fields": ["notional", "price"]},
        ) from None
    if qty <= 0:
        raise ValidationError(f"notional {amount} buys less than one step ({step}) of {symbol}")
    return qty


def authorize(account: AccountRow, user_id: str, is_admin: bool) -> None:
    if account.is_house and not is_admin:
        raise Forbidden("the house account is operated by admins only")
    if not is_admin and account.owner_user_id != user_id:
        raise Forbidden(f"sub-account {account.id} does not belong to user {user_id}")


class OrderService:
    def __init__(
        self,
        factory: sessionmaker[Session],
        exchange: Exchange,
        instruments: InstrumentCache,
        prices: PriceService,
        notifier: Notifier,
        clock: Clock,
        stream_books: Callable[[], bool] = lambda: False,
    ) -> None:
        self._factory = factory
        self._exchange = exchange
        self._instruments = instruments
        self._prices = prices
        self._notify = notifier
        self._clock = clock
        self.stream_books = stream_books

    # -- placing ----------------------------------------------------------------------------

    def place_market(self, c: cmd.PlaceMarketOrder) -> Deferred:
        return self._place_deferred(c, OrderType.MARKET, None, None, False, "manual")

    def place_limit(self, c: cmd.PlaceLimitOrder) -> Deferred:
        tif = TimeInForce.GTX if c.postOnly else c.timeInForce
        return self._place_deferred(c, OrderType.LIMIT, c.price, tif, c.postOnly, "manual")

    def _place_deferred(
        self,
        c: cmd.PlaceMarketOrder | cmd.PlaceLimitOrder,
        order_type: OrderType,
        price: Decimal | None,
        tif: TimeInForce | None,
        post_only: bool,
        origin: str,
    ) -> Deferred:
        """Answer as soon as the exchange accepted the order; book its fills after."""
        order, resumed = self._persist_intent(c, order_type, price, tif, post_only, origin)
        if resumed:
            return Deferred(self._resume(order))
        acked = self._create(order)
        order_id, sub_account_id = order.id, order.sub_account_id

        record_ack = (
            _ACK_SQL,
            {
                "ack_id": order_id,
                "ack_exchange_order_id": acked.exchange_order_id,
                "ack_at": self._clock.now(),
            },
        )

        def settle() -> None:
            self.record_exchange_state(order_id, acked, sub_account_id=sub_account_id)

        # Asked after the exchange call: the stream must be up when the order's events come.
        after = None if self.stream_books() else settle
        return Deferred(ack_view(order, acked), within=record_ack, after=after)

    def _place_or_resume(
        self,
        c: cmd.PlaceMarketOrder | cmd.PlaceLimitOrder,
        order_type: OrderType,
        price: Decimal | None,
        tif: TimeInForce | None,
        post_only: bool,
        origin: str,
    ) -> dict[str, Any]:
        order, resumed = self._persist_intent(
            c, order_type, price, tif, post_only, origin, by_engine=True
        )
        return self._resume(order) if resumed else self._send(order)

    def place_internal(
        self,
        sub_account_id: int,
        symbol: str,
        side: Side,
        qty: Decimal,
        *,
        origin: str,
        request_id: str,
        reduce_only: bool = True,
    ) -> dict[str, Any]:
        """A reduce-only market order decided by the engine (close, liquidation, ADL).

        Built without the command edge's validation: its request id is in the engine's own
        namespace (``risk:…``), which the edge refuses to commands; the risk checks still
        judge the order."""
        command = cmd.PlaceMarketOrder.model_construct(
            requestId=request_id,
            userId="engine",
            role="admin",
            subAccountId=sub_account_id,
            symbol=symbol,
            side=side,
            qty=qty,
            reduceOnly=reduce_only,
        )
        return self._place_or_resume(command, OrderType.MARKET, None, None, False, origin)

    def _persist_intent(
        self,
        c: cmd.PlaceMarketOrder | cmd.PlaceLimitOrder,
        order_type: OrderType,
        price: Decimal | None,
        tif: TimeInForce | None,
        post_only: bool,
        origin: str,
        *,
        by_engine: bool = False,
    ) -> tuple[Order, bool]:
        """Validate under the sub-account's lock and commit the intent; returns it (detached)
        and False. When a previous delivery of the request left a live intent, returns that
        one and True instead (nothing is validated or written: the caller resumes it)."""
        instrument = self._instruments.get(c.symbol)
        with unit_of_work(self._factory) as s:
            # Locked, then read: sees every intent committed before the lock was granted.
            account, rows = lock_and_read_order_context(s, c.subAccountId, c.requestId)
            # Authorized before anything of the account is answered, a resumed intent included.
            authorize(account, c.userId, c.is_admin)
            if rows.existing_order_id is not None:
                existing = s.get(Order, rows.existing_order_id)
                assert existing is not None
                return existing, True
            positions = rows.positions
            # Every symbol the risk checks price: the order's, the held ones, and those of
            # working orders (their margin is reserved at the mark).
            symbols = {c.symbol} | set(positions) | {o.symbol for o in rows.open_orders}
            marks, quotes = {}, {}
            for symbol in symbols:
                view = self._prices.get(symbol)
                marks[symbol] = view.mark
                if view.bid and view.ask:
                    quotes[symbol] = Quote(bid=view.bid, ask=view.ask)
            qty = c.qty
            if qty is None:
                assert c.notional is not None
                step = (
                    instrument.step_size
                    if order_type is OrderType.LIMIT
                    else instrument.market_step_size
                )
                reference = price or marks[c.symbol]
                qty = qty_for_notional(c.notional, reference, step, c.symbol, at_mark=price is None)
            intent = OrderIntent(
                symbol=c.symbol,
                side=c.side,
                qty=qty,
                order_type=order_type,
                price=price,
                reduce_only=c.reduceOnly,
                post_only=post_only,
                time_in_force=tif,
                leverage=c.leverage,
                by_engine=by_engine,
            )
            context = context_from_rows(account, rows, self._instruments.all(), marks, quotes)
            decision = validate(intent, context)
            if not decision.accepted:
                primary = decision.primary
                assert primary is not None
                error = primary.to_exception()
                error.details["reasons"] = [r.to_error() for r in decision.reasons]
                raise error
            values: dict[str, Any] = {
                "sub_account_id": account.id,
                "symbol": c.symbol,
                "side": c.side.value,
                "type": order_type.value,
                "qty": qty,
                "price": price,
                "reduce_only": c.reduceOnly,
                "post_only": post_only,
                "time_in_force": tif.value if tif else None,
                "leverage": context.leverage_for(intent),
                "status": OrderStatus.PENDING_NEW.value,
                "filled_qty": Decimal(0),
                "origin": origin,
                "request_id": c.requestId,
            }
            order_id = rows.next_order_id
            order = Order(
                id=order_id,
                client_order_id=client_order_id(order_id),
                exchange_order_id=None,
                avg_price=None,
                reject_reason=None,
                created_at=rows.now,
                updated_at=rows.now,
                **values,
            )
            statements = [
                (
                    _INSERT_INTENT_SQL,
                    {**values, "id": order_id, "client_order_id": order.client_order_id},
                )
            ]
            if c.leverage is not None:
                statements.append(remember_leverage(account.id, c.symbol, c.leverage))
            # The last statement of the transaction goes out with its COMMIT: nothing may
            # follow it in this block.
            conn = s.connection()
            for sql, params in statements[:-1]:
                conn.exec_driver_sql(sql, params)
            execute_and_commit(conn, *statements[-1])
        log.debug(
            "order intent persisted", orderId=order_id, subAccountId=c.subAccountId, symbol=c.symbol
        )
        return order, False

    def _send(self, order: Order) -> dict[str, Any]:
        """Place a committed intent (as persisted: the caller's copy or one just loaded)."""
        acked = self._create(order)
        return self.record_exchange_state(order.id, acked, sub_account_id=order.sub_account_id)

    def _create(self, order: Order) -> ExchangeOrder:
        """The exchange call for a committed intent; a refusal marks the intent REJECTED."""
        order_id = order.id
        request = OrderRequest(
            symbol=order.symbol,
            side=Side(order.side),
            type=OrderType(order.type),
            qty=order.qty,
            client_order_id=order.client_order_id,
            price=order.price,
            time_in_force=TimeInForce(order.time_in_force) if order.time_in_force else None,
            reduce_only=order.reduce_only,
            # Called right after the intent's commit (or its restamp): signed within
            # SIGN_WINDOW of that, or not sent (PENDING_GRACE counts from the stamp).
            sign_by_ms=self._clock.ms() + SIGN_WINDOW // timedelta(milliseconds=1),
        )
        try:
            acked = self._exchange.create_order(request)
        except UnknownOrderState as exc:
            if exc.details.get("placed") is False:
                self._reject(order_id, exc)
            # placed unknown: the intent stays PENDING_NEW; a retry or order-sync settles it.
            raise
        except PmsError as exc:
            self._reject(order_id, exc)
            raise
        return acked

    def _reject(self, order_id: int, exc: PmsError) -> None:
        with unit_of_work(self._factory) as s:
            order = s.get(Order, order_id, with_for_update=True)
            assert order is not None
            if order.status == OrderStatus.PENDING_NEW.value:
                order.status = OrderStatus.REJECTED.value
                order.reject_reason = f"{exc.code}: {exc.message}"[:500]
                order.updated_at = self._clock.now()
            view = views.order_view(order)
        self._notify.order(view)

    def record_exchange_state(
        self,
        order_id: int,
        acked: ExchangeOrder,
        *,
        sub_account_id: int | None = None,
        trades: Sequence[TradeReport] | None = None,
    ) -> dict[str, Any]:
        """Store the exchange's view of the order and book the fills it reports.

        One transaction under the sub-account's lock (then the order's, the booking path's
        order): the acknowledgement, every fill the exchange reports for the order (each
        booked once by trade id), and the terminal status once every fill it implies is
        booked. Events are published after the commit. ``trades``: the order's trades when
        the caller has just read them (order-sync), so they are not asked for again.
        """
        if trades is None:
            trades = (
                self._exchange.fetch_order_trades(acked.symbol, acked.exchange_order_id)
                if acked.executed_qty > 0
                else []
            )
        booked: list[Booked] = []
        with unit_of_work(self._factory) as s:
            if sub_account_id is None:
                sub_account_id = s.execute(
                    select(Order.sub_account_id).where(Order.id == order_id)
                ).scalar_one()
            account = lock_account(s, sub_account_id)
            order = s.execute(_LOCK_ORDER, {"id": order_id}).scalar_one()
            order.exchange_order_id = acked.exchange_order_id
            if order.status == OrderStatus.PENDING_NEW.value:
                order.status = OrderStatus.NEW.value
                order.updated_at = self._clock.now()
            if (
                OrderStatus(order.status).is_open
                and acked.qty >= order.filled_qty
                and acked.qty > 0
                and (acked.qty, acked.price or order.price) != (order.qty, order.price)
            ):
                # Amended on the exchange while we were not listening (the stream's AMENDMENT
                # lost): its quantity and price are the exchange's.
                order.qty = acked.qty
                if order.type == OrderType.LIMIT.value and acked.price > 0:
                    order.price = acked.price
                order.updated_at = self._clock.now()
            for trade in trades:
                result = (
                    book_order_fill(s, account, order, trade, "rest")
                    if trade.exchange_order_id == order.exchange_order_id
                    else book_fill(s, trade, "rest")
                )
                if result is not None:
                    booked.append(result)
            status = _EXCHANGE_STATUS.get(acked.status)
            # A terminal state is taken once every fill it implies is booked; until then the
            # order stays open and the user stream or order-sync completes it.
            settled = (
                status is not None and not status.is_open and order.filled_qty >= acked.executed_qty
            )
            if settled and status is not None and order.status != status.value:
                order.status = status.value
                order.updated_at = self._clock.now()
            view = views.order_view(order)
        for result in booked:
            self._notify.booked(result)
        last_update = (
            next(
                (data for type_, _, data in reversed(booked[-1].events) if type_ is ORDER_UPDATE),
                None,
            )
            if booked
            else None
        )
        if last_update != view:  # nothing booked, or the status moved after the last fill
            self._notify.order(view)
        return view

    def _resume(self, order: Order) -> dict[str, Any]:
        """A redelivered command: continue from what was persisted, by clientOrderId."""
        log.info("resuming order from a previous delivery", orderId=order.id, status=order.status)
        found = self._exchange.fetch_order(order.symbol, order.client_order_id)
        if found is None and order.status == OrderStatus.PENDING_NEW.value:
            wait = (PENDING_GRACE - (self._clock.now() - order.updated_at)).total_seconds()
            if wait > 0:
                # The first delivery's request may still reach the exchange: sent again now,
                # a market order would fill twice (its clientOrderId is free again once the
                # first one is closed). Wait until it cannot arrive, then look again.
                log.info("waiting out a placement that may still arrive", wait_s=wait)
                time.sleep(wait)
                found = self._exchange.fetch_order(order.symbol, order.client_order_id)
        if found is None:
            if order.status == OrderStatus.PENDING_NEW.value:
                # Placed again: stamped first, so a delivery after this one waits out this
                # placement in turn (and it is signed within SIGN_WINDOW of the stamp).
                restamped = self._restamp(order.id)
                if restamped is None:
                    return self._resume_settled(order.id)
                order.updated_at = restamped
                return self._send(order)
            if not OrderStatus(order.status).is_open:
                return views.order_view(order)  # settled already; nothing to resume
            raise ExchangeUnavailable(
                f"exchange no longer reports order {order.id}; order-sync will settle it"
            )
        return self.record_exchange_state(order.id, found, sub_account_id=order.sub_account_id)

    def _restamp(self, order_id: int) -> datetime | None:
        """Record that a PENDING_NEW intent is being placed again (its updated_at, the
        database's now); None if it is no longer PENDING_NEW (order-sync settled it)."""
        with unit_of_work(self._factory) as s:
            return s.execute(_RESTAMP, {"id": order_id}).scalar_one_or_none()

    def _resume_settled(self, order_id: int) -> dict[str, Any]:
        with unit_of_work(self._factory) as s:
            order = s.get(Order, order_id)
            assert order is not None
            return views.order_view(order)

    @staticmethod
    def _find_by_request(s: Session, request_id: str, sub_account_id: int) -> Order | None:
        """The live intent of a previous delivery on this sub-account. A REJECTED one placed
        nothing, so a retry (allowed only after a retryable refusal) is a fresh decision."""
        query = select(Order).where(
            Order.request_id == request_id,
            Order.sub_account_id == sub_account_id,
            Order.status != OrderStatus.REJECTED.value,
        )
        return s.execute(query.order_by(Order.id)).scalars().first()

    # -- cancelling -------------------------------------------------------------------------

    def cancel(self, c: cmd.CancelOrder) -> dict[str, Any]:
        with unit_of_work(self._factory) as s:
            query = select(Order).where(Order.sub_account_id == c.subAccountId)
            query = (
                query.where(Order.id == c.orderId)
                if c.orderId
                else query.where(Order.client_order_id == c.clientOrderId)
            )
            order = s.execute(query).scalar_one_or_none()
            account = s.get(SubAccount, c.subAccountId)
            if account is None:
                raise NotFound(f"sub-account {c.subAccountId} does not exist")
            authorize(account, c.userId, c.is_admin)
            if order is None:
                raise NotFound(
                    f"order {c.orderId or c.clientOrderId} not found on sub-account {c.subAccountId}"
                )
            order_id = order.id
        return self.cancel_order_id(order_id)

    def cancel_order_id(self, order_id: int) -> dict[str, Any]:
        with unit_of_work(self._factory) as s:
            order = s.get(Order, order_id)
            assert order is not None
            if not OrderStatus(order.status).is_open:
                return views.order_view(order)
            symbol, coid = order.symbol, order.client_order_id
            placing = order.status == OrderStatus.PENDING_NEW.value
            placed_at = order.updated_at  # a PENDING_NEW intent's: its last placement
        cancelled = self._exchange.cancel_order(symbol, coid)
        if cancelled is None:
            # Unknown to the exchange: it never arrived (or is long gone). Settle by fetching.
            found = self._exchange.fetch_order(symbol, coid)
            if found is None:
                if placing and self._clock.now() - placed_at < PENDING_GRACE:
                    # Its placement may still be on the way: closed here, it would rest on
                    # the exchange unknown to us and unmargined once it arrived.
                    raise ExchangeUnavailable(
                        f"order {order_id} is still being placed; cancel it again shortly",
                        {"orderId": order_id, "status": OrderStatus.PENDING_NEW.value},
                    )
                return self.close_locally(order_id, OrderStatus.CANCELED, "not on exchange")
            cancelled = found
        return self.record_exchange_state(order_id, cancelled)

    def close_locally(self, order_id: int, status: OrderStatus, reason: str) -> dict[str, Any]:
        with unit_of_work(self._factory) as s:
            order = s.get(Order, order_id, with_for_update=True)
            assert order is not None
            if OrderStatus(order.status).is_open:
                order.status = status.value
                order.reject_reason = reason
                order.updated_at = self._clock.now()
            view = views.order_view(order)
        self._notify.order(view)
        return view

    def cancel_all(self, c: cmd.CancelAllOrders) -> dict[str, Any]:
        with unit_of_work(self._factory) as s:
            account = s.get(SubAccount, c.subAccountId)
            if account is None:
                raise NotFound(f"sub-account {c.subAccountId} does not exist")
            authorize(account, c.userId, c.is_admin)
            ids = self.open_order_ids(s, c.subAccountId, c.symbol)
        return self.cancel_ids(ids)

    def cancel_ids(self, ids: list[int]) -> dict[str, Any]:
        """Cancel each order; one that fails does not stop the others (a freeze or a
        liquidation must cancel what it can). Any failure is raised at the end with what was
        cancelled: EXCHANGE_UNAVAILABLE if retrying may help, else EXCHANGE_REJECTED."""
        cancelled, failed = [], []
        retry = False
        for order_id in ids:
            try:
                cancelled.append(self.cancel_order_id(order_id))
            except PmsError as exc:
                failed.append({"orderId": order_id, "error": exc.to_error()})
                retry = retry or isinstance(exc, RetryableError)
        if failed:
            details = {"cancelled": cancelled, "failed": failed}
            message = f"{len(failed)} of {len(ids)} cancels did not complete"
            if retry:
                raise ExchangeUnavailable(f"{message}; retry", details)
            raise ExchangeRejected(message, details)
        return {"cancelled": cancelled}

    @staticmethod
    def open_order_ids(s: Session, sub_account_id: int, symbol: str | None = None) -> list[int]:
        query = select(Order.id).where(
            Order.sub_account_id == sub_account_id,
            Order.status.in_([st.value for st in OrderStatus if st.is_open]),
        )
        if symbol:
            query = query.where(Order.symbol == symbol)
        return list(s.execute(query.order_by(Order.id)).scalars())

    # -- positions and leverage ---------------------------------------------------------------

    def close_position(self, c: cmd.ClosePosition) -> Deferred:
        with unit_of_work(self._factory) as s:
            account = s.get(SubAccount, c.subAccountId)
            if account is None:
                raise NotFound(f"sub-account {c.subAccountId} does not exist")
            authorize(account, c.userId, c.is_admin)
            existing = self._find_by_request(s, c.requestId, c.subAccountId)
            position = s.execute(
                select(Position).where(
                    Position.sub_account_id == c.subAccountId,
                    Position.symbol == c.symbol,
                    Position.closed_at.is_(None),
                )
            ).scalar_one_or_none()
        if existing is not None:
            return Deferred(self._resume(existing))
        if position is None or position.qty == 0:
            raise NotFound(f"no open {c.symbol} position on sub-account {c.subAccountId}")
        held = abs(position.qty)
        side = Side.SELL if position.qty > 0 else Side.BUY
        qty = held if c.qty is None else c.qty
        if qty > held:
            raise ValidationError(f"cannot close {qty}: the position is {held}")
        order = cmd.PlaceMarketOrder(
            requestId=c.requestId,
            userId=c.userId,
            role=c.role,
            subAccountId=c.subAccountId,
            symbol=c.symbol,
            side=side,
            qty=qty,
            reduceOnly=True,
        )
        return self._place_deferred(order, OrderType.MARKET, None, None, False, "close")

    def set_leverage(self, c: cmd.SetLeverage) -> dict[str, Any]:
        """Leverage is per sub-account and symbol, enforced by our checks, never sent to the
        exchange (the master account's own leverage is the operator's: docs/commands.md)."""
        instrument = self._instruments.get(c.symbol)
        with unit_of_work(self._factory) as s:
            account = lock_account(s, c.subAccountId)
            authorize(account, c.userId, c.is_admin)
            rules = s.get(RiskRules, account.id)
            assert rules is not None
            position = s.execute(
                select(Position).where(
                    Position.sub_account_id == account.id,
                    Position.symbol == c.symbol,
                    Position.closed_at.is_(None),
                )
            ).scalar_one_or_none()
            # The new leverage re-margins the position held: it must be one the bracket of
            # that position's notional allows (60000 of BTC: 100x, not the first bracket's
            # 125x), as check_leverage demands of an order.
            held = position.qty if position is not None else Decimal(0)
            position_notional = Decimal(0)
            if held:
                mark = self._prices.mark(c.symbol)
                if not is_price(mark):
                    raise ExchangeUnavailable(
                        f"no usable mark price for {c.symbol} ({mark}); retry shortly",
                        {"symbols": [c.symbol]},
                    )
                position_notional = notional(held, mark)
            bracket_max = bracket_max_leverage(instrument, position_notional)
            cap = min(rules.max_leverage, bracket_max)
            if c.leverage > cap:
                why = (
                    "your risk rules"
                    if cap == rules.max_leverage
                    else "the exchange bracket of a position of notional "
                    + to_wire(position_notional)
                )
                raise LeverageTooHigh(
                    f"leverage {c.leverage} is above the maximum {cap} for {c.symbol} ({why})",
                    {
                        "max": cap,
                        "ruleMax": rules.max_leverage,
                        "exchangeMax": bracket_max,
                        "notional": to_wire(position_notional),
                    },
                )
            s.connection().exec_driver_sql(*remember_leverage(account.id, c.symbol, c.leverage))
            if position is not None:
                position.leverage = c.leverage
        return {"subAccountId": c.subAccountId, "symbol": c.symbol, "leverage": c.leverage}
