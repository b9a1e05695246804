"""Risk orders above the market's maximum quantity (MARKET_LOT_SIZE.maxQty; BTCUSDT: 120)
are split into legs the exchange accepts, each with a request id derived from the event, so a
resumed action continues its legs instead of placing them again."""

from __future__ import annotations

import uuid
from decimal import Decimal

import pytest
from sqlalchemy import select

from pms.commands import schemas as cmd
from pms.db.models import LiquidationEvent, Order
from pms.db.session import unit_of_work
from pms.domain.enums import Side
from pms.domain.instrument import Instrument
from pms.errors import RateLimited
from pms.riskengine.executor import legs_of, split_qty
from tests.factories import new_user
from tests.riskengine.conftest import CatchingHarness
from tests.trading.conftest import BTC, Trader

D = Decimal


def instrument(max_qty: str = "120", step: str = "0.001", min_qty: str = "0.001") -> Instrument:
    return Instrument(
        symbol=BTC,
        exchange_id="BTCUSDT",
        base="BTC",
        quote="USDT",
        tick_size=D("0.1"),
        step_size=D(step),
        min_qty=D(min_qty),
        max_qty=D("1000"),
        market_step_size=D(step),
        market_min_qty=D(min_qty),
        market_max_qty=D(max_qty),
        min_notional=D("100"),
        min_price=D("0.1"),
        max_price=D("1000000"),
    )


@pytest.mark.parametrize(
    ("qty", "pieces"),
    [
        ("0.5", ["0.5"]),
        ("120", ["120"]),
        ("121", ["120", "1"]),
        ("240", ["120", "120"]),
        ("360.25", ["120", "120", "120", "0.25"]),
    ],
)
def test_split_qty_takes_the_market_max_first(qty: str, pieces: list[str]) -> None:
    assert split_qty(D(qty), instrument()) == [D(p) for p in pieces]


def test_a_remainder_below_the_market_minimum_borrows_from_the_leg_before() -> None:
    # 120.05 with a minimum of 0.1: 120 + 0.05 would be refused; 119.95 + 0.1 is not.
    pieces = split_qty(D("120.05"), instrument(step="0.01", min_qty="0.1"))
    assert pieces == [D("119.95"), D("0.1")] and sum(pieces) == D("120.05")


def test_leg_request_ids_derive_from_the_event_and_keep_the_unsplit_id_for_leg_zero() -> None:
    legs = legs_of(9, BTC, Side.SELL, D("250"), instrument())
    assert [(leg.qty, leg.request_id) for leg in legs] == [
        (D("120"), f"risk:9:{BTC}"),
        (D("120"), f"risk:9:{BTC}:1"),
        (D("10"), f"risk:9:{BTC}:2"),
    ]
    assert legs == legs_of(9, BTC, Side.SELL, D("250"), instrument()), "deterministic"


def open_121_btc(h: CatchingHarness) -> int:
    """A 121 BTC long, bought in two orders within MARKET_LOT_SIZE (60,000 and 60,000.1)."""
    app = h.app
    t = Trader(app, new_user())
    t.sub_account_id = t.send(
        "create_sub_account", (cmd.CreateSubAccount, app.accounts.create), name="big"
    )["data"]["subAccountId"]
    sub = t.sub_account_id
    assert t.send(
        "deposit", (cmd.Deposit, app.accounts.deposit), subAccountId=sub, amount="400000"
    )["ok"]
    assert t.send(
        "update_risk_rules",
        (cmd.UpdateRiskRules, app.accounts.update_risk_rules),
        role="admin",
        subAccountId=sub,
        maxLeverage=20,
        maxExposureMultiple=100,
    )["ok"]
    assert app.instruments.get(BTC).market_max_qty == D("120")
    for price in ("60000", "60000.1"):
        h.sim.admin("/sim/price", {"symbol": "BTCUSDT", "price": price})
        app.prices.forget()
        bought = t.send(
            "place_market_order",
            (cmd.PlaceMarketOrder, app.orders.place_market),
            subAccountId=sub,
            symbol=BTC,
            side="BUY",
            qty="60.5",
            leverage=20,
            requestId=uuid.uuid4().hex,
        )
        assert bought["ok"], bought
    assert h.state(sub)[1] == D("121")
    h.monitor.load_all()
    return sub


def closes(h: CatchingHarness, sub: int) -> list[tuple[str, D, str]]:
    with unit_of_work(h.app.sessions) as s:
        rows = s.execute(
            select(Order)
            .where(Order.sub_account_id == sub, Order.origin == "liquidation")
            .order_by(Order.id)
        ).scalars()
        return [(o.request_id or "", o.qty, o.status) for o in rows]


def close_event_id(h: CatchingHarness, sub: int) -> int:
    [event] = [e for e in h.events(sub) if e.action == "liquidate_close"]
    return int(event.id)


def test_liquidation_close_of_a_position_above_market_max_qty(catching: CatchingHarness) -> None:
    """121 BTC cannot be closed in one market order (max 120): it used to be refused whole
    by the quantity filter and the event stayed PENDING forever. Now two legs, 120 and 1."""
    h = catching
    sub = open_121_btc(h)

    # 121 BTC at 57,000: notional 6.897M, MM = 6.897M·1% − 11,450 ≈ 57.5k; equity ≈ 32k.
    h.move(D("57000"))

    assert h.errors == []
    assert h.state(sub)[1] == 0
    event_id = close_event_id(h, sub)
    assert closes(h, sub) == [
        (f"risk:{event_id}:{BTC}", D("120"), "FILLED"),
        (f"risk:{event_id}:{BTC}:1", D("1"), "FILLED"),
    ]
    with unit_of_work(h.app.sessions) as s:
        event = s.get(LiquidationEvent, event_id)
        assert event is not None and event.status == "DONE"
        assert event.details["closes"] == [{"symbol": BTC, "side": "SELL", "qty": "121"}]


def test_a_resumed_split_close_continues_its_legs(catching: CatchingHarness) -> None:
    """The first leg meets a 429 (nothing placed), the second goes out; the event stays
    PENDING. Resumed, the first leg is placed and the second is found by its request id:
    121 BTC closed by exactly one 120 and one 1 on the exchange."""
    h = catching
    sub = open_121_btc(h)
    h.sim.admin(
        "/sim/faults",
        {"kind": "429", "count": 1, "path": "/fapi/v1/order", "method": "POST", "retryAfter": 0},
    )

    h.move(D("57000"))

    assert [type(e) for e in h.errors] == [RateLimited]
    assert h.state(sub)[1] == D("120")
    event_id = close_event_id(h, sub)

    h.reenforce(sub)

    assert len(h.errors) == 1
    assert h.state(sub)[1] == 0
    leg0, leg1 = f"risk:{event_id}:{BTC}", f"risk:{event_id}:{BTC}:1"
    assert closes(h, sub) == [
        (leg0, D("120"), "REJECTED"),
        (leg1, D("1"), "FILLED"),
        (leg0, D("120"), "FILLED"),
    ]
    with unit_of_work(h.app.sessions) as s:
        ours = set(
            s.execute(
                select(Order.client_order_id).where(
                    Order.sub_account_id == sub, Order.origin == "liquidation"
                )
            ).scalars()
        )
    placed = [
        D(o["origQty"]) for o in h.sim.admin("/sim/state")["orders"] if o["clientOrderId"] in ours
    ]
    assert sorted(placed) == [D("1"), D("120")]
    assert h.events(sub)[-1].status == "DONE"
