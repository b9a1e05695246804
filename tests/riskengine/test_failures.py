"""Risk actions that fail: a refusal that retrying cannot cure closes the event FAILED (the
reason recorded and published) and enforcement goes on; one that may pass leaves it PENDING
and the next enforcement resumes it without repeating an order. A liquidation closes every
symbol it can, whatever happens to the others."""

from __future__ import annotations

from decimal import Decimal

from sqlalchemy import select

from pms.commands import schemas as cmd
from pms.db.models import LiquidationEvent, Order, Position
from pms.db.session import unit_of_work
from pms.errors import RateLimited
from tests.riskengine.conftest import CatchingHarness
from tests.trading.conftest import BTC, ETH, Trader

D = Decimal


def open_btc_and_eth(h: CatchingHarness) -> Trader:
    """Long 0.5 BTC at 60,000 (50x) and 1 ETH at 3,000 (20x) on a 1,500 deposit."""
    t = h.open_long("1500", "0.5", 50)
    bought = t.send(
        "place_market_order",
        (cmd.PlaceMarketOrder, h.app.orders.place_market),
        subAccountId=t.sub_account_id,
        symbol=ETH,
        side="BUY",
        qty="1",
        leverage=20,
    )
    assert bought["ok"], bought
    h.monitor.load_all()
    h.monitor.on_marks({ETH: D("3000")})  # no streamer here: the monitor hears ETH from us
    return t


def liquidation_orders(h: CatchingHarness, sub: int) -> list[tuple[str, str, D, str]]:
    with unit_of_work(h.app.sessions) as s:
        rows = s.execute(
            select(Order)
            .where(Order.sub_account_id == sub, Order.origin == "liquidation")
            .order_by(Order.id)
        ).scalars()
        return [(o.symbol, o.request_id or "", o.qty, o.status) for o in rows]


def held(h: CatchingHarness, sub: int) -> dict[str, D]:
    with unit_of_work(h.app.sessions) as s:
        rows = s.execute(
            select(Position.symbol, Position.qty).where(
                Position.sub_account_id == sub, Position.closed_at.is_(None)
            )
        )
        return {symbol: qty for symbol, qty in rows}


def master_qty(h: CatchingHarness, exchange_symbol: str) -> D:
    positions = h.sim.admin("/sim/state")["positions"]
    return D(next(p["positionAmt"] for p in positions if p["symbol"] == exchange_symbol))


def test_a_resumed_adl_cut_larger_than_the_position_fails_and_enforcement_goes_on(
    catching: CatchingHarness,
) -> None:
    """A worker died after recording an ADL cut of 0.125; the trader then closed most of the
    position himself. The resumed cut is now refused (reduce-only larger than the position):
    it used to stay PENDING and block every later enforcement, so the account was never
    liquidated. Now the ADL event ends FAILED with the reason, and the liquidation follows."""
    h = catching
    t = h.open_long("1000", "0.5", 50)
    sub = t.sub_account_id
    with unit_of_work(h.app.sessions) as s:
        event = LiquidationEvent(
            sub_account_id=sub,
            idempotency_key=f"{sub}:adl:1",
            tier="ADL1",
            action="adl",
            status="PENDING",
            details={
                "cuts": [{"symbol": BTC, "side": "SELL", "qty": "0.125"}],
                "projectedRatio": "0.7",
                "reason": "tier RESTRICTED -> ADL1",
            },
        )
        s.add(event)
        s.flush()
        adl_id = event.id
    closed = t.send(
        "close_position",
        (cmd.ClosePosition, h.app.orders.close_position),
        subAccountId=sub,
        symbol=BTC,
        qty="0.4",
    )
    assert closed["ok"], closed
    h.monitor.reload([sub])

    h.move(h.mark_for_ratio(sub, D("1.02")))

    assert h.errors == []
    assert h.state(sub)[1] == 0
    assert [(e.action, e.status) for e in h.events(sub)] == [
        ("adl", "FAILED"),
        ("margin_call", "DONE"),
        ("liquidate_close", "DONE"),
    ]
    failed = next(
        e["data"] for e in h.published("liquidation", sub) if e["data"]["eventId"] == adl_id
    )
    assert failed["status"] == "FAILED" and failed["orders"] == []
    [failure] = failed["failures"]
    assert failure["requestId"] == f"risk:{adl_id}:{BTC}"
    assert failure["error"]["code"] == "VALIDATION_ERROR"
    assert h.events(sub)[0].details["failures"] == failed["failures"], "recorded as published"


def test_liquidation_closes_the_other_symbols_when_the_exchange_refuses_one(
    catching: CatchingHarness,
) -> None:
    """The exchange refuses the BTC close (its reduce-only would not reduce the master's
    position: someone traded the master account by hand). The ETH close still goes out, the
    event ends FAILED with the refusal, and the next enforcement starts a new liquidation that
    closes BTC once the master account is back in line."""
    h = catching
    sub = open_btc_and_eth(h).sub_account_id
    outside = master_qty(h, "BTCUSDT")
    h.sim.admin("/sim/positions/adjust", {"symbol": "BTCUSDT", "qty": str(-outside)})
    try:
        h.move(D("57000"))  # equity ≈ 0: past liquidation
    finally:
        h.sim.admin("/sim/positions/adjust", {"symbol": "BTCUSDT", "qty": str(outside)})

    first = [e for e in h.events(sub) if e.action == "liquidate_close"]
    assert [e.status for e in first] == ["FAILED"]
    assert [f["error"]["code"] for f in first[0].details["failures"]] == ["EXCHANGE_REJECTED"]
    assert [(o[0], o[3]) for o in liquidation_orders(h, sub)] == [
        (BTC, "REJECTED"),
        (ETH, "FILLED"),
    ]
    assert list(held(h, sub)) == [BTC]
    assert h.account(sub).status == "LIQUIDATING", "a liquidation, once decided, runs to the end"

    h.reenforce(sub)  # within a second of the failure: held back (pms.riskengine.pacing)
    assert [e.status for e in h.events(sub) if e.action == "liquidate_close"] == ["FAILED"]
    assert len(liquidation_orders(h, sub)) == 2, "nothing sent"

    h.clock.advance(1)
    h.reenforce(sub)

    assert h.errors == []
    assert held(h, sub) == {}
    assert [e.status for e in h.events(sub) if e.action == "liquidate_close"] == [
        "FAILED",
        "DONE",
    ]
    assert h.account(sub).status == "ACTIVE"


def test_a_close_refused_for_a_retryable_reason_is_resumed_not_repeated(
    catching: CatchingHarness,
) -> None:
    """The exchange answers the BTC close with 429: the ETH close goes out anyway, the event
    stays PENDING and enforcement reports the error. The next enforcement resumes it: BTC is
    placed again (nothing was placed), ETH is found by its request id, not sent twice."""
    h = catching
    sub = open_btc_and_eth(h).sub_account_id
    h.sim.admin(
        "/sim/faults",
        {"kind": "429", "count": 1, "path": "/fapi/v1/order", "method": "POST", "retryAfter": 0},
    )

    h.move(D("57000"))

    assert [type(e) for e in h.errors] == [RateLimited]
    [event] = [e for e in h.events(sub) if e.action == "liquidate_close"]
    assert event.status == "PENDING"
    assert list(held(h, sub)) == [BTC]
    eth_id = f"risk:{event.id}:{ETH}"

    h.reenforce(sub)

    assert len(h.errors) == 1
    assert [e.status for e in h.events(sub) if e.action == "liquidate_close"] == ["DONE"]
    assert [(o[0], o[1], o[3]) for o in liquidation_orders(h, sub)] == [
        (BTC, f"risk:{event.id}:{BTC}", "REJECTED"),
        (ETH, eth_id, "FILLED"),
        (BTC, f"risk:{event.id}:{BTC}", "FILLED"),
    ]
    on_exchange = [
        o for o in h.sim.admin("/sim/state")["orders"] if o["symbol"] in ("BTCUSDT", "ETHUSDT")
    ]
    with unit_of_work(h.app.sessions) as s:
        ours = set(
            s.execute(
                select(Order.client_order_id).where(
                    Order.sub_account_id == sub, Order.origin == "liquidation"
                )
            ).scalars()
        )
    assert sorted(o["symbol"] for o in on_exchange if o["clientOrderId"] in ours) == [
        "BTCUSDT",
        "ETHUSDT",
    ], "one close per symbol reached the exchange"
    assert held(h, sub) == {}
