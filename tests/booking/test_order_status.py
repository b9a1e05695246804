"""A user-stream TRADE whose order status is FILLED (or another terminal status) closes the
order only once every fill that status implies is booked (docs/streamer.md): a fill the stream
missed keeps the order open, and order-sync, which looks at open orders, books it."""

from __future__ import annotations

from decimal import Decimal
from types import SimpleNamespace

from sqlalchemy.orm import Session, sessionmaker

from pms.clock import TestClock
from pms.db.models import Order
from pms.db.session import unit_of_work
from pms.exchange.model import TradeReport
from pms.execution.booking import book_fills
from pms.execution.orders import OrderService
from pms.sync.orders import sync_orders
from tests.booking.helpers import FilledExchange, Quiet, make_order, positions, trade
from tests.factories import funded_account

D = Decimal


def _missed_then_last(
    factory: sessionmaker[Session], symbol: str
) -> tuple[int, Order, TradeReport, TradeReport]:
    sub, _ = funded_account(factory, "10000")
    order = make_order(factory, sub, "BUY", "0.010", symbol)
    missed = trade(order, "0.004", "150", with_coid=False)  # happened while the stream was down
    last = trade(order, "0.006", "151", order_status="FILLED")  # on the stream: X=FILLED
    with unit_of_work(factory) as s:
        assert book_fills(s, [last], "stream")[0] is not None
    return sub, order, missed, last


def test_stream_fill_marked_FILLED_leaves_the_order_open_while_a_fill_is_missing(
    session_factory: sessionmaker[Session],
) -> None:
    _, order, _, _ = _missed_then_last(session_factory, "XRP/USDT:USDT")
    with unit_of_work(session_factory) as s:
        row = s.get(Order, order.id)
        assert row is not None
        filled, status = row.filled_qty, row.status
    assert filled == D("0.006")
    assert status == "PARTIALLY_FILLED", (
        f"order is {status} with only {filled} of 0.010 booked: order-sync will never look "
        "at it again, so the missing fill is never booked"
    )


def test_order_sync_books_the_fill_the_stream_missed(
    session_factory: sessionmaker[Session],
) -> None:
    symbol = "LTC/USDT:USDT"  # a symbol of its own: order-sync below only looks at it
    sub, order, missed, last = _missed_then_last(session_factory, symbol)
    exchange = FilledExchange(order, [missed, last])
    clock = TestClock()
    notifier = Quiet()
    app = SimpleNamespace(
        clock=clock,
        sessions=session_factory,
        exchange=exchange,
        notifier=notifier,
        orders=OrderService(session_factory, exchange, None, None, notifier, clock),  # type: ignore[arg-type]
    )
    sync_orders(app, symbol)  # type: ignore[arg-type]

    open_rows = [p for p in positions(session_factory, sub) if p.closed_at is None]
    qty = open_rows[0].qty if open_rows else D(0)
    # The master account bought 0.010 for this order; the sub-account must hold 0.010.
    assert qty == D("0.010"), (
        f"sub-account holds {qty} of the 0.010 the exchange filled for its order "
        f"(order-sync asked the exchange about {exchange.asked})"
    )
