"""Order-sync of an intent still PENDING_NEW whose order IS on the exchange and filled (the
worker died right after the POST; the user stream missed the fills). ``_sync_one`` books the
order's trades (``_book`` → ``book_fill``) *before* ``_settle`` records the exchange order id;
userTrades carry no clientOrderId, and the intent has no exchange_order_id yet, so the
booking path does not recognise the trades as ours: nothing is booked, the order is reported
``unbooked`` (an operator alarm: "fills we cannot find") and stays open one more run."""

from __future__ import annotations

import pytest
from sqlalchemy import select

from pms.commands import schemas as cmd
from pms.db.models import Order
from pms.db.session import unit_of_work
from pms.sync.orders import sync_orders
from tests.trading.conftest import ETH


def test_order_sync_books_a_filled_order_left_pending_new_in_one_pass(
    app, sim, trader, monkeypatch: pytest.MonkeyPatch
) -> None:
    t = trader()
    real = app.exchange.create_order

    def placed_then_died(request):
        real(request)
        raise RuntimeError("worker died after the POST")

    monkeypatch.setattr(app.exchange, "create_order", placed_then_died)
    result = t.send(
        "place_market_order",
        (cmd.PlaceMarketOrder, app.orders.place_market),
        subAccountId=t.sub_account_id,
        symbol=ETH,
        side="BUY",
        qty="0.1",
    )
    monkeypatch.undo()
    assert result["error"]["code"] == "INTERNAL", result
    with unit_of_work(app.sessions) as s:
        order = s.execute(
            select(Order).where(Order.sub_account_id == t.sub_account_id)
        ).scalar_one()
        assert order.status == "PENDING_NEW"
        oid = order.id
    on_exchange = [
        o for o in sim.admin("/sim/state")["orders"] if o["clientOrderId"] == f"pms-{oid}"
    ]
    assert [o["status"] for o in on_exchange] == ["FILLED"]

    report = sync_orders(app, ETH)
    with unit_of_work(app.sessions) as s:
        status = s.get(Order, oid).status
    assert report.unbooked == [], report.as_dict()
    assert status == "FILLED" and report.fills_booked == 1, (status, report.as_dict())
