"""Order-sync and position-sync against the simulator, on a database of their own (position
sums are global, so other suites' positions must not be in it)."""

from __future__ import annotations

from datetime import timedelta
from decimal import Decimal

import pytest
from sqlalchemy import func, select

from pms.app import App
from pms.db.models import Fill, Order
from pms.db.session import unit_of_work
from pms.errors import NotFound
from pms.exchange.ccxt_factory import make_binanceusdm
from pms.messaging.events import EventType
from pms.sim.runner import SimServer
from pms.sync.orders import resync_order, sync_orders
from pms.sync.positions import sync_positions
from tests.trading.conftest import ETH, Trader

D = Decimal


@pytest.fixture
def desk(app: App) -> Trader:
    from pms.commands import schemas as cmd
    from tests.factories import new_user

    t = Trader(app, new_user())
    t.sub_account_id = t.send(
        "create_sub_account", (cmd.CreateSubAccount, app.accounts.create), name="s"
    )["data"]["subAccountId"]
    t.send(
        "deposit",
        (cmd.Deposit, app.accounts.deposit),
        subAccountId=t.sub_account_id,
        amount="20000",
    )
    return t


def limit(t: Trader, side: str, qty: str, price: str) -> dict:
    from pms.commands import schemas as cmd

    result = t.send(
        "place_limit_order",
        (cmd.PlaceLimitOrder, t.app.orders.place_limit),
        subAccountId=t.sub_account_id,
        symbol=ETH,
        side=side,
        qty=qty,
        price=price,
    )
    assert result["ok"], result
    return result["data"]


def test_a_fill_the_engine_never_heard_of_is_booked_once(
    app: App, desk: Trader, sim: SimServer
) -> None:
    order = limit(desk, "BUY", "0.5", "2990")
    sim.admin("/sim/price", {"symbol": "ETHUSDT", "price": "2980"})  # crosses the resting bid
    report = sync_orders(app)
    assert report.fills_booked >= 1 and order["orderId"] in report.closed
    again = sync_orders(app)
    assert again.fills_booked == 0
    with unit_of_work(app.sessions) as s:
        assert s.get(Order, order["orderId"]).status == "FILLED"
        filled = s.execute(
            select(func.sum(Fill.qty)).where(Fill.order_id == order["orderId"])
        ).scalar_one()
        assert filled == D("0.5")
    sim.admin("/sim/price", {"symbol": "ETHUSDT", "price": "3000"})


def test_order_sync_reads_a_filled_orders_trades_once(
    app: App, desk: Trader, sim: SimServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    """userTrades weighs 5 of the master account's 2,400 a minute: order-sync read each
    filled order's trades twice (to book them, then again to settle the order)."""
    order = limit(desk, "BUY", "0.2", "2990")
    sim.admin("/sim/price", {"symbol": "ETHUSDT", "price": "2980"})
    asked: list[str] = []
    real = app.exchange.fetch_order_trades

    def counted(symbol: str, exchange_order_id: str) -> list:
        asked.append(exchange_order_id)
        return real(symbol, exchange_order_id)

    monkeypatch.setattr(app.exchange, "fetch_order_trades", counted)
    try:
        report = sync_orders(app)
    finally:
        sim.admin("/sim/price", {"symbol": "ETHUSDT", "price": "3000"})
    assert order["orderId"] in report.closed and report.fills_booked >= 1
    assert len(asked) == len(set(asked)) >= 1, asked
    with unit_of_work(app.sessions) as s:
        assert s.get(Order, order["orderId"]).status == "FILLED"


def test_intent_that_never_reached_the_exchange_is_closed(app: App, desk: Trader) -> None:
    with unit_of_work(app.sessions) as s:
        oid = int(s.execute(select(func.nextval("orders_id_seq"))).scalar_one())
        s.add(
            Order(
                id=oid,
                client_order_id=f"pms-{oid}",
                sub_account_id=desk.sub_account_id,
                symbol=ETH,
                side="BUY",
                type="LIMIT",
                qty=D("0.1"),
                price=D("2900"),
                leverage=5,
                status="PENDING_NEW",
                filled_qty=D(0),
                created_at=app.clock.now() - timedelta(minutes=5),
                updated_at=app.clock.now() - timedelta(minutes=5),
            )
        )
    report = sync_orders(app)
    assert oid in report.closed
    with unit_of_work(app.sessions) as s:
        assert s.get(Order, oid).status == "REJECTED"


def test_unknown_order_with_our_prefix_is_reported(app: App, sim: SimServer) -> None:
    ex = make_binanceusdm(sim.url, sim.api_key, sim.secret)
    ex.fapiPrivatePostOrder(
        {
            "symbol": "ETHUSDT",
            "side": "BUY",
            "type": "LIMIT",
            "quantity": "0.1",
            "price": "2900",
            "timeInForce": "GTC",
            "newClientOrderId": "pms-999999999",
        }
    )
    report = sync_orders(app)
    assert "pms-999999999" in report.unknown_on_exchange
    ex.fapiPrivateDeleteOrder({"symbol": "ETHUSDT", "origClientOrderId": "pms-999999999"})


def test_injected_drift_is_reported_with_its_size(app: App, desk: Trader, sim: SimServer) -> None:
    assert sync_positions(app) == [], "books and exchange agree before the injection"
    newest = app.redis.xrevrange(app.events.stream, count=1)
    last = newest[0][0].decode() if newest else "0"
    sim.admin("/sim/positions/adjust", {"symbol": "ETHUSDT", "qty": "0.3"})
    drifts = sync_positions(app)
    assert len(drifts) == 1
    drift = drifts[0]
    assert drift.symbol == ETH and drift.diff == D("0.3")
    assert "no open order explains it" in drift.cause
    published = [e for _, e in app.events.read(last) if e["type"] == EventType.POSITION_DRIFT.value]
    assert published and published[-1]["data"]["diff"] == "0.3"
    sim.admin("/sim/positions/adjust", {"symbol": "ETHUSDT", "qty": "-0.3"})
    assert sync_positions(app) == []


def test_a_closed_order_whose_trades_cannot_be_found_is_reported_not_invented(
    app: App, desk: Trader, sim: SimServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The exchange says FILLED but its trade history no longer holds the order's trades (over
    1000 of them, older than the history keeps): nothing is booked from the order's totals and
    the order is not closed as if nothing had filled; order-sync reports it, every run."""
    order = limit(desk, "BUY", "0.4", "2990")
    sim.admin("/sim/price", {"symbol": "ETHUSDT", "price": "2980"})  # fills on the exchange
    monkeypatch.setattr(app.exchange, "fetch_order_trades", lambda symbol, order_id: [])
    try:
        for _ in range(2):
            report = sync_orders(app)
            assert report.fills_booked == 0 and order["orderId"] not in report.closed
            assert report.unbooked == [
                {
                    "orderId": order["orderId"],
                    "clientOrderId": order["clientOrderId"],
                    "symbol": ETH,
                    "exchangeStatus": "FILLED",
                    "exchangeFilledQty": "0.4",
                    "bookedQty": "0",
                }
            ]
        with unit_of_work(app.sessions) as s:
            assert s.get(Order, order["orderId"]).status == "NEW"
            assert not s.execute(select(Fill).where(Fill.order_id == order["orderId"])).first()

        monkeypatch.undo()  # the trades are found again: booked, settled, no longer reported
        report = sync_orders(app)
        assert report.fills_booked == 1 and order["orderId"] in report.closed
        assert report.unbooked == []
    finally:
        sim.admin("/sim/price", {"symbol": "ETHUSDT", "price": "3000"})
        monkeypatch.undo()


def test_an_operator_resync_books_the_trades_and_settles_the_order(
    app: App, desk: Trader, sim: SimServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    """``pms order resync ID --since T`` (pms.sync.orders.resync_order): the trades read in
    time windows from T, where order-sync's query no longer finds them; booked once, the
    order closed. A second resync books nothing."""
    since = app.clock.now() - timedelta(days=9)  # two of Binance's 7-day windows
    order = limit(desk, "BUY", "0.3", "2990")
    sim.admin("/sim/price", {"symbol": "ETHUSDT", "price": "2980"})
    monkeypatch.setattr(app.exchange, "fetch_order_trades", lambda symbol, order_id: [])
    try:
        assert sync_orders(app).unbooked[0]["orderId"] == order["orderId"]

        report = resync_order(app, order["orderId"], since)

        assert report.fills_booked >= 1 and report.closed == [order["orderId"]]
        assert report.unbooked == [] and report.errors == []
        with unit_of_work(app.sessions) as s:
            assert s.get(Order, order["orderId"]).status == "FILLED"
            filled = s.execute(
                select(func.sum(Fill.qty)).where(Fill.order_id == order["orderId"])
            ).scalar_one()
            assert filled == D("0.3")
            sources = set(
                s.execute(select(Fill.source).where(Fill.order_id == order["orderId"])).scalars()
            )
            assert sources == {"sync"}
        again = resync_order(app, order["orderId"], since)
        assert again.fills_booked == 0 and again.errors == [
            f"order {order['orderId']} is already FILLED"
        ]
    finally:
        sim.admin("/sim/price", {"symbol": "ETHUSDT", "price": "3000"})


def test_resync_of_an_unknown_order_is_refused(app: App) -> None:
    with pytest.raises(NotFound):
        resync_order(app, 10**12, app.clock.now())
