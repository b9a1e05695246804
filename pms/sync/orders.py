"""Order-sync: our open orders checked against the exchange; missed fills booked through the
one booking path (never twice: trade ids are unique); orders gone from the exchange closed;
exchange orders carrying our prefix that we do not know reported.

Runs periodically (scheduler) and after every user-stream reconnect (streamer).
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from datetime import datetime, timedelta
from typing import Any

import structlog
from sqlalchemy import select

from pms.app import App
from pms.db.models import Order
from pms.db.session import unit_of_work
from pms.domain.enums import OrderStatus
from pms.domain.numbers import to_wire
from pms.errors import NotFound, PmsError, RateLimited
from pms.exchange.model import ExchangeOrder, TradeReport
from pms.execution.booking import book_fill
from pms.execution.orders import CLIENT_ID_PREFIX, PENDING_GRACE

log = structlog.get_logger(__name__)
_EXCHANGE_CLOSED = {"FILLED", "CANCELED", "EXPIRED", "EXPIRED_IN_MATCH", "REJECTED"}


@dataclass
class OrderSyncReport:
    checked: int = 0
    fills_booked: int = 0
    closed: list[int] = field(default_factory=list)
    unknown_on_exchange: list[str] = field(default_factory=list)
    # Orders the exchange reports closed with more filled than we could book: the trades
    # are not (or no longer) in the exchange's trade history. Left open (margin held, each
    # run tries again) for an operator: docs/operations.md, *Inspecting stuck jobs*.
    unbooked: list[dict[str, Any]] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)
    # The exchange answered 429/418: the run stopped there (calling on is what earns an IP
    # ban, which would stop orders and liquidations too); the next run goes on.
    rate_limited: bool = False

    def as_dict(self) -> dict[str, Any]:
        return {
            "checked": self.checked,
            "fillsBooked": self.fills_booked,
            "closed": self.closed,
            "unknownOnExchange": self.unknown_on_exchange,
            "unbooked": self.unbooked,
            "errors": self.errors,
        }


def sync_orders(app: App, symbol: str | None = None) -> OrderSyncReport:
    report = OrderSyncReport()
    now = app.clock.now()
    with unit_of_work(app.sessions) as s:
        query = select(
            Order.id, Order.symbol, Order.client_order_id, Order.status, Order.updated_at
        ).where(Order.status.in_([st.value for st in OrderStatus if st.is_open]))
        if symbol:
            query = query.where(Order.symbol == symbol)
        open_orders = s.execute(query.order_by(Order.id)).all()
    known = set()
    # A PENDING_NEW intent's updated_at is when its placement was last decided.
    for order_id, order_symbol, coid, status, placed_at in open_orders:
        known.add(coid)
        report.checked += 1
        try:
            _sync_one(app, report, order_id, order_symbol, coid, status, now - placed_at)
        except RateLimited as exc:
            report.errors.append(f"order {order_id}: {exc.code} {exc.message}; run stopped")
            report.rate_limited = True
            break
        except PmsError as exc:
            report.errors.append(f"order {order_id}: {exc.code} {exc.message}")
        except Exception as exc:  # a malformed answer about one order must not starve the rest
            log.exception("order-sync of an order failed", orderId=order_id)
            report.errors.append(f"order {order_id}: {type(exc).__name__} {exc}")
    if not report.rate_limited:
        _find_unknown(app, report, known, symbol)
    if report.fills_booked or report.closed or report.unknown_on_exchange:
        log.warning("order-sync corrected our books", **report.as_dict())
    return report


def _sync_one(
    app: App,
    report: OrderSyncReport,
    order_id: int,
    symbol: str,
    coid: str,
    status: str,
    age: timedelta,
) -> None:
    found = app.exchange.fetch_order(symbol, coid)
    if found is None:
        if status == OrderStatus.PENDING_NEW.value and age < PENDING_GRACE:
            return
        # Never reached the exchange (PENDING_NEW) or long gone from it.
        app.orders.close_locally(
            order_id,
            OrderStatus.REJECTED
            if status == OrderStatus.PENDING_NEW.value
            else OrderStatus.EXPIRED,
            "not found on the exchange by order-sync",
        )
        report.closed.append(order_id)
        return
    trades = (
        app.exchange.fetch_order_trades(symbol, found.exchange_order_id)
        if found.executed_qty > 0
        else []
    )
    _book(app, report, _ours(trades, coid))
    _settle(app, report, order_id, symbol, coid, status, found)


def _ours(trades: list[TradeReport], coid: str) -> list[TradeReport]:
    """The trades of one of our orders, read by its exchange order id, carrying its
    clientOrderId: REST trades have none, and an order whose acknowledgement was lost has no
    exchange order id in our books yet, so the booking could not tell they are its."""
    return [t if t.client_order_id else replace(t, client_order_id=coid) for t in trades]


def _book(app: App, report: OrderSyncReport, trades: list[TradeReport]) -> None:
    """Book each trade once (source ``sync``), its events published after its commit."""
    for trade in trades:
        with unit_of_work(app.sessions) as s:
            booked = book_fill(s, trade, "sync")
        if booked is not None:
            report.fills_booked += 1
            app.notifier.booked(booked)


def _settle(
    app: App,
    report: OrderSyncReport,
    order_id: int,
    symbol: str,
    coid: str,
    before: str,
    found: ExchangeOrder,
) -> None:
    """Record the exchange's state of the order (closing it once every fill it implies is
    booked) and report what changed, or what cannot be settled. The order's trades were
    read and booked just before (``_book``): not asked for again."""
    view = app.orders.record_exchange_state(order_id, found, trades=())
    if view["status"] != before and not OrderStatus(view["status"]).is_open:
        report.closed.append(order_id)
    elif found.status in _EXCHANGE_CLOSED and OrderStatus(view["status"]).is_open:
        # Closed on the exchange, but the fills its executedQty implies are not all in the
        # trade history we can read, so the order cannot be settled: never invent a fill.
        gap = {
            "orderId": order_id,
            "clientOrderId": coid,
            "symbol": symbol,
            "exchangeStatus": found.status,
            "exchangeFilledQty": to_wire(found.executed_qty),
            "bookedQty": view["filledQty"],
        }
        report.unbooked.append(gap)
        log.error(
            "order closed on the exchange with fills we cannot find: left open, its margin"
            " held, until its trades are found or an operator settles it",
            **gap,
        )


def _find_unknown(app: App, report: OrderSyncReport, known: set[str], symbol: str | None) -> None:
    try:
        on_exchange = app.exchange.fetch_open_orders(symbol)
    except RateLimited as exc:
        report.errors.append(f"open orders: {exc.code} {exc.message}; run stopped")
        report.rate_limited = True
        return
    except PmsError as exc:
        report.errors.append(f"open orders: {exc.code} {exc.message}")
        return
    except Exception as exc:  # a malformed answer
        log.exception("order-sync could not read the exchange's open orders")
        report.errors.append(f"open orders: {type(exc).__name__} {exc}")
        return
    candidates = [
        o
        for o in on_exchange
        if o.client_order_id.startswith(CLIENT_ID_PREFIX) and o.client_order_id not in known
    ]
    if not candidates:
        return
    with unit_of_work(app.sessions) as s:
        ours = set(
            s.execute(
                select(Order.client_order_id).where(
                    Order.client_order_id.in_([o.client_order_id for o in candidates])
                )
            ).scalars()
        )
    for o in candidates:
        if o.client_order_id not in ours:
            report.unknown_on_exchange.append(o.client_order_id)
            log.error(
                "exchange order with our prefix is unknown to us",
                clientOrderId=o.client_order_id,
                symbol=o.symbol,
            )


def resync_order(app: App, order_id: int, since: datetime) -> OrderSyncReport:
    """An operator's settlement of one order order-sync reported ``unbooked``: its trades
    read from the exchange from ``since`` to now (in the windows Binance allows), each booked
    once through the booking path (source ``sync``), then the exchange's state recorded,
    which closes the order once every fill it implies is booked. Whatever is still missing
    is reported again in ``unbooked``."""
    report = OrderSyncReport()
    with unit_of_work(app.sessions) as s:
        order = s.get(Order, order_id)
        if order is None:
            raise NotFound(f"order {order_id} not found")
        symbol, coid, status = order.symbol, order.client_order_id, order.status
    report.checked = 1
    if not OrderStatus(status).is_open:
        report.errors.append(f"order {order_id} is already {status}")
        return report
    found = app.exchange.fetch_order(symbol, coid)
    if found is None:
        report.errors.append(f"order {order_id}: the exchange does not know {coid}")
        return report
    start_ms = int(since.timestamp() * 1000)
    trades = app.exchange.fetch_order_trades_between(
        symbol, found.exchange_order_id, start_ms, app.clock.ms()
    )
    _book(app, report, _ours(trades, coid))
    _settle(app, report, order_id, symbol, coid, status, found)
    log.warning("order resynced", orderId=order_id, since=since.isoformat(), **report.as_dict())
    return report
