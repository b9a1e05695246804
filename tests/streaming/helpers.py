"""Small helpers shared by the streamer tests."""

from __future__ import annotations

import uuid
from decimal import Decimal
from typing import Any

import redis
from sqlalchemy import func, select

from pms.app import App
from pms.commands import schemas as cmd
from pms.config import Settings
from pms.db.models import Fill, Order
from pms.db.session import unit_of_work
from pms.messaging import wire
from tests.factories import funded_account

BTC = "BTC/USDT:USDT"


def resting_buy(app: App, price: str = "59000", qty: str = "0.002", symbol: str = BTC) -> str:
    """A funded sub-account and a resting limit BUY; returns its clientOrderId."""
    sub, user = funded_account(app.sessions, "5000")
    answer = app.orders.place_limit(
        cmd.PlaceLimitOrder(
            requestId=uuid.uuid4().hex,
            userId=user,
            subAccountId=sub,
            symbol=symbol,
            side="BUY",
            qty=Decimal(qty),
            price=Decimal(price),
        )
    )
    view = answer.data  # the exchange's acknowledgement; the booking step runs in `after`
    if answer.after is not None:
        answer.after()
    assert view["status"] == "NEW", view
    return str(view["clientOrderId"])


def market_buy(app: App, qty: str = "0.002", symbol: str = BTC) -> str:
    """A funded sub-account and a market BUY through the command runner, its steps after the
    result included (as the worker runs them); returns its clientOrderId."""
    sub, user = funded_account(app.sessions, "5000")
    command = {
        "requestId": uuid.uuid4().hex,
        "userId": user,
        "subAccountId": sub,
        "symbol": symbol,
        "side": "BUY",
        "qty": qty,
    }
    result = app.runner.run(
        "place_market_order", command, cmd.PlaceMarketOrder, app.orders.place_market
    )
    assert result is not None and result["ok"], result
    return str(result["data"]["clientOrderId"])


def fills_of(app: App, client_order_id: str) -> list[tuple[str, str]]:
    """(trade id, source) of every booked fill of the order."""
    with unit_of_work(app.sessions) as s:
        rows = s.execute(
            select(Fill.exchange_trade_id, Fill.source)
            .join(Order, Order.id == Fill.order_id)
            .where(Order.client_order_id == client_order_id)
            .order_by(Fill.id)
        ).all()
    return [(str(t), str(src)) for t, src in rows]


def order_status(app: App, client_order_id: str) -> str:
    with unit_of_work(app.sessions) as s:
        return str(
            s.execute(
                select(Order.status).where(Order.client_order_id == client_order_id)
            ).scalar_one()
        )


def sim_trade_ids(app: App, sim_state: dict[str, Any], client_order_id: str) -> list[str]:
    """Trade ids the simulator made for our order (matched by exchange order id)."""
    with unit_of_work(app.sessions) as s:
        exchange_id = s.execute(
            select(Order.exchange_order_id).where(Order.client_order_id == client_order_id)
        ).scalar_one()
    return [str(f["id"]) for f in sim_state["fills"] if str(f["orderId"]) == exchange_id]


def sync_queue_len(client: redis.Redis, settings: Settings) -> int:
    return int(client.llen(wire.queue_key(settings.dramatiq_namespace, "pms.sync")))


def sync_messages(client: redis.Redis, settings: Settings) -> list[dict[str, Any]]:
    ns = settings.dramatiq_namespace
    ids = client.lrange(wire.queue_key(ns, "pms.sync"), 0, -1)
    out = []
    for rid in ids:
        raw = client.hget(wire.msgs_key(ns, "pms.sync"), rid)
        if raw is not None:
            out.append(wire.loads(raw))
    return out


def count_fills(app: App) -> int:
    with unit_of_work(app.sessions) as s:
        return int(s.execute(select(func.count(Fill.id))).scalar_one())
