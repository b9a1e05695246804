"""Request ids and the order lifecycle's edges, from this session's audit (each test failed
before its fix):

- a malformed retry of a finished requestId must not replace its stored result;
- the risk engine's own request ids (``risk:…``) are refused at the command edge, and an
  order intent is resumed only on its own sub-account and only after authorization: an
  owner could otherwise pre-claim their account's next liquidation leg, and anyone could
  read (or resume) an order of another sub-account through its request id;
- a cancel that reaches an order still being placed is retryable, never "cancelled" while
  the placement is on its way (it would then rest on the exchange, closed and unmargined here).
"""

from __future__ import annotations

import threading
import uuid
from decimal import Decimal
from typing import Any

import pytest
from sqlalchemy import select

from pms.app import App
from pms.commands import schemas as cmd
from pms.db.models import Order, Position
from pms.db.session import unit_of_work
from pms.domain.enums import Side, TimeInForce
from pms.errors import ExchangeRejected, Forbidden
from pms.sim.runner import SimServer
from tests.trading.conftest import BTC, ETH

D = Decimal


def actors(app: App) -> dict[str, tuple[Any, Any]]:
    return {
        "place_market_order": (cmd.PlaceMarketOrder, app.orders.place_market),
        "place_limit_order": (cmd.PlaceLimitOrder, app.orders.place_limit),
        "cancel_all_orders": (cmd.CancelAllOrders, app.orders.cancel_all),
        "close_position": (cmd.ClosePosition, app.orders.close_position),
        "deposit": (cmd.Deposit, app.accounts.deposit),
    }


def open_qty(app: App, sub: int, symbol: str) -> Decimal:
    with unit_of_work(app.sessions) as s:
        qty = s.execute(
            select(Position.qty).where(
                Position.sub_account_id == sub,
                Position.symbol == symbol,
                Position.closed_at.is_(None),
            )
        ).scalar_one_or_none()
    return qty if qty is not None else D(0)


def test_a_malformed_retry_never_replaces_a_stored_result(app: App, trader) -> None:
    # Arrange: a deposit that went through.
    t = trader("1000")
    rid = uuid.uuid4().hex
    first = t.send(
        "deposit", actors(app)["deposit"], requestId=rid, subAccountId=t.sub_account_id, amount="5"
    )
    assert first["ok"] and app.results.get(rid) == first

    # Act: the same requestId with a misspelt field.
    again = t.send(
        "deposit",
        actors(app)["deposit"],
        requestId=rid,
        subAccountId=t.sub_account_id,
        amount="5",
        amonut="500",
    )

    # Assert: the sender hears the refusal; the stored answer is still the deposit's.
    assert again["error"]["code"] == "VALIDATION_ERROR"
    assert app.results.get(rid) == first


@pytest.mark.parametrize("request_id", ["risk:1:BTC/USDT:USDT", "risk:77:ETH/USDT:USDT:1"])
def test_the_engines_request_ids_are_refused_at_the_edge(app: App, trader, request_id: str) -> None:
    t = trader("1000")
    refused = t.send(
        "place_limit_order",
        actors(app)["place_limit_order"],
        requestId=request_id,
        subAccountId=t.sub_account_id,
        symbol=ETH,
        side="BUY",
        qty="0.01",
        price="2900",
    )
    assert refused["error"]["code"] == "VALIDATION_ERROR", refused
    assert "requestId" in refused["error"]["message"]
    with unit_of_work(app.sessions) as s:
        assert s.execute(select(Order).where(Order.request_id == request_id)).first() is None


def test_an_intent_is_resumed_only_after_authorization(app: App, trader) -> None:
    # Arrange: the victim's order, and its request id in the attacker's hands.
    victim, attacker = trader("5000"), trader("5000")
    rid = uuid.uuid4().hex
    opened = victim.send(
        "place_market_order",
        actors(app)["place_market_order"],
        requestId=rid,
        subAccountId=victim.sub_account_id,
        symbol=ETH,
        side="BUY",
        qty="0.1",
    )
    assert opened["ok"], opened

    # Act / Assert: the order service (behind the runner's dedup) refuses before resuming.
    for command, handler in (
        (
            cmd.PlaceMarketOrder(
                requestId=rid,
                userId=attacker.user,
                subAccountId=victim.sub_account_id,
                symbol=ETH,
                side=Side.BUY,
                qty=D("1"),
            ),
            app.orders.place_market,
        ),
        (
            cmd.ClosePosition(
                requestId=rid, userId=attacker.user, subAccountId=victim.sub_account_id, symbol=ETH
            ),
            app.orders.close_position,
        ),
    ):
        with pytest.raises(Forbidden):
            handler(command)  # type: ignore[operator]
    victim.send(
        "close_position",
        actors(app)["close_position"],
        subAccountId=victim.sub_account_id,
        symbol=ETH,
    )


def test_an_order_under_an_engine_id_on_another_account_does_not_take_the_leg(
    app: App, trader
) -> None:
    # Arrange: the victim's long; an order on another account that (bypassing the edge's
    # check, as a bug or an old row might) carries the id of the victim's next liquidation leg.
    victim, other = trader("5000"), trader("5000")
    opened = victim.send(
        "place_market_order",
        actors(app)["place_market_order"],
        subAccountId=victim.sub_account_id,
        symbol=ETH,
        side="BUY",
        qty="0.1",
    )
    assert opened["ok"], opened
    leg = f"risk:{uuid.uuid4().int % 10**9}:{ETH}"
    app.orders.place_limit(
        cmd.PlaceLimitOrder.model_construct(
            requestId=leg,
            userId=other.user,
            role=None,
            subAccountId=other.sub_account_id,
            symbol=ETH,
            side=Side.BUY,
            qty=D("0.01"),
            notional=None,
            price=D("2900"),
            timeInForce=TimeInForce.GTC,
            postOnly=False,
            reduceOnly=False,
            leverage=None,
        )
    )
    try:
        # Act: the engine closes the victim under that id.
        view = app.orders.place_internal(
            victim.sub_account_id, ETH, Side.SELL, D("0.1"), origin="liquidation", request_id=leg
        )

        # Assert: the victim's own close, placed and filled.
        assert view["subAccountId"] == victim.sub_account_id, view
        assert open_qty(app, victim.sub_account_id, ETH) == 0
    finally:
        other.send(
            "cancel_all_orders",
            actors(app)["cancel_all_orders"],
            subAccountId=other.sub_account_id,
        )


def test_a_cancel_while_the_order_is_being_placed_is_retryable(
    app: App, trader, sim: SimServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Arrange: a limit order whose exchange call is held (network latency) after its intent
    # committed.
    t = trader("5000")
    sub = t.sub_account_id
    entered, release = threading.Event(), threading.Event()
    real_create = app.exchange.create_order

    def slow_create(request: Any) -> Any:
        entered.set()
        assert release.wait(20)
        return real_create(request)

    monkeypatch.setattr(app.exchange, "create_order", slow_create)
    placed: dict[str, Any] = {}
    placing = threading.Thread(
        target=lambda: placed.update(
            t.send(
                "place_limit_order",
                actors(app)["place_limit_order"],
                subAccountId=sub,
                symbol=BTC,
                side="BUY",
                qty="0.002",
                price="58000",
            )
        )
    )
    placing.start()
    try:
        assert entered.wait(20)

        # Act: cancel everything while the placement is on its way.
        during = t.send("cancel_all_orders", actors(app)["cancel_all_orders"], subAccountId=sub)
    finally:
        release.set()
        placing.join(30)
    monkeypatch.undo()

    # Assert: retryable, and the order is open on both sides; the retry cancels it on both.
    assert during["error"]["code"] == "EXCHANGE_UNAVAILABLE", during
    assert "still being placed" in during["error"]["details"]["failed"][0]["error"]["message"]
    assert placed["ok"] and placed["data"]["status"] == "NEW", placed
    coid = placed["data"]["clientOrderId"]
    with unit_of_work(app.sessions) as s:
        assert s.execute(select(Order.status).where(Order.client_order_id == coid)).scalar() in (
            "NEW",
            "PENDING_NEW",
        )
    again = t.send("cancel_all_orders", actors(app)["cancel_all_orders"], subAccountId=sub)
    assert again["ok"], again
    live = [
        o
        for o in sim.admin("/sim/state")["orders"]
        if o["clientOrderId"] == coid and o["status"] in ("NEW", "PARTIALLY_FILLED")
    ]
    assert live == []
    with unit_of_work(app.sessions) as s:
        status = s.execute(select(Order.status).where(Order.client_order_id == coid)).scalar()
    assert status == "CANCELED"


def test_a_cancel_refused_by_the_exchange_does_not_stop_the_others(
    app: App, trader, sim: SimServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Arrange: two resting buys; the exchange refuses to cancel the first.
    t = trader("5000")
    sub = t.sub_account_id
    placed = [
        t.send(
            "place_limit_order",
            actors(app)["place_limit_order"],
            subAccountId=sub,
            symbol=BTC,
            side="BUY",
            qty="0.002",
            price=price,
        )
        for price in ("58000", "58100")
    ]
    assert all(p["ok"] for p in placed), placed
    stuck = placed[0]["data"]["clientOrderId"]
    real_cancel = app.exchange.cancel_order

    def cancel(symbol: str, client_order_id: str) -> Any:
        if client_order_id == stuck:
            raise ExchangeRejected("exchange rejected cancel order: -1000 (test)")
        return real_cancel(symbol, client_order_id)

    monkeypatch.setattr(app.exchange, "cancel_order", cancel)

    # Act
    answer = t.send("cancel_all_orders", actors(app)["cancel_all_orders"], subAccountId=sub)
    monkeypatch.undo()

    # Assert: the second is cancelled; the refusal is reported, not retried blindly.
    assert answer["error"]["code"] == "EXCHANGE_REJECTED", answer
    details = answer["error"]["details"]
    assert [o["clientOrderId"] for o in details["cancelled"]] == [
        placed[1]["data"]["clientOrderId"]
    ]
    assert [f["orderId"] for f in details["failed"]] == [placed[0]["data"]["orderId"]]
    assert t.send("cancel_all_orders", actors(app)["cancel_all_orders"], subAccountId=sub)["ok"]
