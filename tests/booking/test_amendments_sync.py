"""Order-sync of an order whose quantity was amended on the exchange while the user stream was
down (the AMENDMENT event was never seen): the exchange reports the order FILLED at its new
quantity with its trades; order-sync books them."""

from __future__ import annotations

from decimal import Decimal
from types import SimpleNamespace

from sqlalchemy.orm import Session, sessionmaker

from pms.clock import TestClock
from pms.db.models import Order
from pms.db.session import unit_of_work
from pms.execution.orders import OrderService
from pms.sync.orders import sync_orders
from tests.booking.helpers import FilledExchange, Quiet, make_order, positions, trade
from tests.factories import funded_account

D = Decimal


def test_order_sync_of_an_amended_order_books_it_with_the_right_average_and_settles_it(
    session_factory: sessionmaker[Session],
) -> None:
    symbol = "ADA/USDT:USDT"  # a symbol of its own: order-sync below only looks at it
    sub, _ = funded_account(session_factory, "10000")
    order = make_order(session_factory, sub, "BUY", "10", symbol)  # amended to 20 on Binance
    trades = [
        trade(order, "10", "100", with_coid=False),
        trade(order, "10", "100", with_coid=False),
    ]
    exchange = FilledExchange(order, trades, qty=D("20"))  # amended on the exchange
    clock = TestClock()
    notifier = Quiet()
    app = SimpleNamespace(
        clock=clock,
        sessions=session_factory,
        exchange=exchange,
        notifier=notifier,
        orders=OrderService(session_factory, exchange, None, None, notifier, clock),  # type: ignore[arg-type]
    )
    report = sync_orders(app, symbol)  # type: ignore[arg-type]

    [position] = positions(session_factory, sub)
    assert position.qty == D("20") and position.entry_price == D("100")
    with unit_of_work(session_factory) as s:
        row = s.get_one(Order, order.id)
        filled, avg, status = row.filled_qty, row.avg_price, row.status
    assert report.unbooked == []
    # Every trade was at 100: the order's average price is 100, and it filled 20.
    assert avg == D("100"), f"order average price {avg} for trades all at 100"
    assert (filled, status) == (D("20"), "FILLED")
