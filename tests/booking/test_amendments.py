"""An order whose quantity was amended on the exchange (Binance PUT /fapi/v1/order, the user
stream's x=AMENDMENT with the new q) and then filled up to its new quantity."""

from __future__ import annotations

from dataclasses import replace
from decimal import Decimal
from typing import Any

from sqlalchemy.orm import Session, sessionmaker

from pms.clock import SystemClock
from pms.db.models import Order
from pms.db.session import unit_of_work
from pms.streaming.fills import FillSink
from pms.streaming.userdata import OrderUpdate
from tests.booking.helpers import make_order, positions, trade
from tests.factories import funded_account

D = Decimal


class _Notes:
    def booked_many(self, bookings: Any) -> None:
        list(bookings)

    def order(self, view: dict[str, Any]) -> None:
        pass


def _amendment(order: Order, qty: str) -> OrderUpdate:
    return OrderUpdate(
        symbol=order.symbol,
        client_order_id=order.client_order_id,
        exchange_order_id=str(order.exchange_order_id),
        execution_type="AMENDMENT",
        status="NEW",
        qty=D(qty),
        price=D("60000"),
        cum_filled=D(0),
        event_ms=1,
        trade=None,
    )


def _fill(order: Order, qty: str, price: str, z: str, status: str) -> OrderUpdate:
    t = replace(trade(order, qty, price), order_status=status, order_filled=D(z))
    return OrderUpdate(
        symbol=order.symbol,
        client_order_id=order.client_order_id,
        exchange_order_id=str(order.exchange_order_id),
        execution_type="TRADE",
        status=status,
        qty=D("0.020"),
        price=D("60000"),
        cum_filled=D(z),
        event_ms=2,
        trade=t,
    )


def _order_state(factory: sessionmaker[Session], order_id: int) -> tuple[Any, ...]:
    with unit_of_work(factory) as s:
        o = s.get_one(Order, order_id)
        return o.qty, o.filled_qty, o.avg_price, o.status


def _limit_order(factory: sessionmaker[Session], sub: int) -> Order:
    order = make_order(factory, sub, "BUY", "0.010")
    with unit_of_work(factory) as s:
        row = s.get_one(Order, order.id)
        row.type, row.price, row.time_in_force = "LIMIT", D("60000"), "GTC"
    return order


def test_amendment_then_fill_in_one_take_books_like_one_event_at_a_time(
    session_factory: sessionmaker[Session],
) -> None:
    """The stream reports, in this order: the amendment 0.010 -> 0.020, then one fill of
    0.020 (X=FILLED, z=0.020). Applied one event at a time the order ends qty 0.020, filled
    0.020 at 60000. In one take the sink books the fills first and the amendment after, so
    the fill is capped at the old quantity and the order's average price is doubled."""
    sink = FillSink(session_factory, _Notes(), SystemClock())  # type: ignore[arg-type]

    one, _ = funded_account(session_factory, "100000")
    a = _limit_order(session_factory, one)
    sink.handle(_amendment(a, "0.020"))
    sink.handle(_fill(a, "0.020", "60000", "0.020", "FILLED"))
    assert _order_state(session_factory, a.id) == (D("0.020"), D("0.020"), D("60000"), "FILLED")

    two, _ = funded_account(session_factory, "100000")
    b = _limit_order(session_factory, two)
    sink.handle_batch([_amendment(b, "0.020"), _fill(b, "0.020", "60000", "0.020", "FILLED")])
    [position] = positions(session_factory, two)
    assert position.qty == D("0.020")  # the position took the whole fill...
    # ...and the order must agree with it, as it does when the events come one at a time.
    assert _order_state(session_factory, b.id) == (D("0.020"), D("0.020"), D("60000"), "FILLED")
