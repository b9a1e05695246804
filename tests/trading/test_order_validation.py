"""Pre-trade validation end to end: runner → the order service's checks under the account lock
→ simulator. What reaches the checks (working orders, the position's bracket, the price cache,
a notional converted to qty) is what the engine actually holds. Fixtures from
tests/trading/conftest.py: BTC mark 60000; BTC brackets: < 50000 notional 125x, then 100x.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Any

import orjson
import pytest
from sqlalchemy import func, select

from pms.app import App, build_app
from pms.clock import TestClock
from pms.commands import schemas as cmd
from pms.config import Settings
from pms.db.models import Order, Position, SubAccount
from pms.db.session import unit_of_work
from pms.domain.enums import Side
from pms.execution.context import open_orders, open_positions
from pms.marketdata.prices import price_key
from pms.risk.snapshot import compute_snapshot
from tests.factories import new_user
from tests.trading.conftest import BTC, Trader

D = Decimal


def market(app: App) -> tuple[Any, Any]:
    return (cmd.PlaceMarketOrder, app.orders.place_market)


def limit(app: App) -> tuple[Any, Any]:
    return (cmd.PlaceLimitOrder, app.orders.place_limit)


def leverage(app: App) -> tuple[Any, Any]:
    return (cmd.SetLeverage, app.orders.set_leverage)


def orders_of(app: App, sub: int) -> int:
    with unit_of_work(app.sessions) as s:
        return s.execute(
            select(func.count()).select_from(Order).where(Order.sub_account_id == sub)
        ).scalar_one()


def test_sells_split_against_a_long_cannot_open_an_unmargined_short(app: App, trader) -> None:
    """A 100 USDT account long 0.01 BTC (IM 30 at 20x) sends ten SELL 0.01 @61000. Only the
    first fits in the long; the others are judged as the short they could open, so the
    margin and exposure checks stop them before the account is over-committed (all ten were
    accepted when each was judged alone: IM 304.5 on ~100 equity)."""
    t = trader("100")
    sub = t.sub_account_id
    bought = t.send(
        "place_market_order", market(app), subAccountId=sub, symbol=BTC, side="BUY", qty="0.01"
    )
    assert bought["ok"], bought

    answers = [
        t.send(
            "place_limit_order",
            limit(app),
            subAccountId=sub,
            symbol=BTC,
            side="SELL",
            qty="0.01",
            price="61000",
        )
        for _ in range(10)
    ]

    refused = [a["error"]["code"] for a in answers if not a["ok"]]
    assert answers[0]["ok"], answers[0]
    assert refused and set(refused) <= {"INSUFFICIENT_MARGIN", "EXPOSURE_LIMIT"}, refused
    with unit_of_work(app.sessions) as s:
        positions = open_positions(s, sub)
        working = open_orders(s, sub)
        account = s.get(SubAccount, sub)
        assert account is not None
        wallet = account.wallet_balance
    marks = {BTC: app.prices.mark(BTC, fresh=True)}
    snap = compute_snapshot(wallet, positions.values(), working, marks, app.instruments.all())
    assert snap.initial_margin <= snap.equity, snap


def test_set_leverage_is_capped_by_the_bracket_of_the_position_held(app: App, trader) -> None:
    """SPEC §5: leverage ≤ min(rule, bracket max). Flat, 125x is the first bracket's; holding
    1 BTC (60000 notional, bracket 2) it is 100x, for set_leverage as for an order."""
    t = trader("10000")
    sub = t.sub_account_id
    rules = t.send(
        "update_risk_rules",
        (cmd.UpdateRiskRules, app.accounts.update_risk_rules),
        role="admin",
        subAccountId=sub,
        maxLeverage=125,
    )
    assert rules["ok"], rules
    flat = t.send("set_leverage", leverage(app), subAccountId=sub, symbol=BTC, leverage=125)
    assert flat["ok"], flat
    back = t.send("set_leverage", leverage(app), subAccountId=sub, symbol=BTC, leverage=20)
    assert back["ok"], back
    bought = t.send(
        "place_market_order", market(app), subAccountId=sub, symbol=BTC, side="BUY", qty="1"
    )
    assert bought["ok"], bought

    by_order = t.send(
        "place_market_order",
        market(app),
        subAccountId=sub,
        symbol=BTC,
        side="BUY",
        qty="0.002",
        leverage=125,
    )
    by_command = t.send("set_leverage", leverage(app), subAccountId=sub, symbol=BTC, leverage=125)
    allowed = t.send("set_leverage", leverage(app), subAccountId=sub, symbol=BTC, leverage=100)

    assert by_order["error"]["code"] == "LEVERAGE_TOO_HIGH", by_order
    assert by_command["error"]["code"] == "LEVERAGE_TOO_HIGH", by_command
    assert by_command["error"]["details"]["max"] == 100
    assert "the exchange bracket of a position of notional" in by_command["error"]["message"]
    assert allowed["ok"], allowed
    with unit_of_work(app.sessions) as s:
        position = s.execute(
            select(Position).where(Position.sub_account_id == sub, Position.closed_at.is_(None))
        ).scalar_one()
        assert position.leverage == 100


def test_a_notional_no_qty_can_hold_is_a_validation_error_and_writes_nothing(
    app: App, trader
) -> None:
    """Notional 10000000 at price 1e-18 is 1e25 BTC to 3 places, more digits than the decimal
    context holds: a malformed order (VALIDATION_ERROR, terminal), not INTERNAL (which would
    leave the command open as retryable)."""
    t = trader("1000")
    sub = t.sub_account_id

    answer = t.send(
        "place_limit_order",
        limit(app),
        subAccountId=sub,
        symbol=BTC,
        side="BUY",
        notional="10000000",
        price="0.000000000000000001",
    )

    assert answer["error"]["code"] == "VALIDATION_ERROR", answer
    assert "notional 10000000 at price 0.000000000000000001" in answer["error"]["message"]
    assert answer["error"]["details"]["fields"] == ["notional", "price"]
    assert orders_of(app, sub) == 0


@pytest.fixture
def zero_mark(app: App) -> Iterator[None]:
    """BTC's mark in the price cache is "0" (an empty markPrice read as zero) for the test."""
    key = price_key(app.settings.redis_prefix, BTC)
    payload = {"mark": "0", "bid": None, "ask": None, "ts": app.clock.ms(), "source": "stream"}
    app.redis.set(key, orjson.dumps(payload))
    app.prices.forget()
    yield
    app.redis.delete(key)
    app.prices.forget()


def test_a_zero_mark_in_the_price_cache_refuses_orders_retryably(
    app: App, trader, zero_mark: None
) -> None:
    """A mark of 0 made every notional and margin 0: a 10 USDT account bought 1 BTC (needs
    3000 IM). Now it is missing market data (EXCHANGE_UNAVAILABLE, retryable), for a qty and
    for a notional (which divided by zero: INTERNAL)."""
    t = trader("10")
    sub = t.sub_account_id

    by_qty = t.send(
        "place_market_order", market(app), subAccountId=sub, symbol=BTC, side="BUY", qty="1"
    )
    by_notional = t.send(
        "place_market_order",
        market(app),
        subAccountId=sub,
        symbol=BTC,
        side="BUY",
        notional="60000",
    )

    assert by_qty["error"]["code"] == "EXCHANGE_UNAVAILABLE", by_qty
    assert "unusable mark price for BTC/USDT:USDT (0)" in by_qty["error"]["message"]
    assert by_notional["error"]["code"] == "EXCHANGE_UNAVAILABLE", by_notional
    assert orders_of(app, sub) == 0


def test_a_cut_is_not_blocked_by_the_working_orders_a_resting_order_would_be(
    app: App, trader
) -> None:
    """A resting order counts the orders working on its side; a reduce-only market order (the
    engine's ADL cut, a trader's close) is judged by the position alone. Long 0.01 BTC with a
    take-profit SELL 0.01 resting, the account at ADL1: the trader may not rest another sell
    (with the take-profit it could open a short), but the engine's cut of 0.005 goes through;
    refusing it would keep the larger position and leave the ADL event pending, ahead of any
    liquidation."""
    t = trader("1000")
    sub = t.sub_account_id
    bought = t.send(
        "place_market_order", market(app), subAccountId=sub, symbol=BTC, side="BUY", qty="0.01"
    )
    take_profit = t.send(
        "place_limit_order",
        limit(app),
        subAccountId=sub,
        symbol=BTC,
        side="SELL",
        qty="0.01",
        price="62000",
    )
    assert bought["ok"] and take_profit["ok"], (bought, take_profit)
    with unit_of_work(app.sessions) as s:
        account = s.get(SubAccount, sub)
        assert account is not None
        account.status, account.tier = "RESTRICTED", "ADL1"

    by_trader = t.send(
        "place_limit_order",
        limit(app),
        subAccountId=sub,
        symbol=BTC,
        side="SELL",
        qty="0.005",
        price="62000",
    )
    cut = app.orders.place_internal(
        sub, BTC, Side.SELL, D("0.005"), origin="adl:test", request_id=f"adl-test-{sub}"
    )

    assert by_trader["error"]["code"] == "ACCOUNT_RESTRICTED", by_trader
    assert cut["status"] == "FILLED", cut
    with unit_of_work(app.sessions) as s:
        assert open_positions(s, sub)[BTC].qty == D("0.005")


def test_the_order_rate_window_is_the_databases_minute_whatever_the_app_clock(
    sim_settings: Settings, prices: Callable[..., None]
) -> None:
    """The window counted the orders created (the database's now()) since the worker's
    clock minus a minute: a worker whose clock ran two minutes ahead counted none and never
    limited (one behind would have counted three minutes). Both ends are the database's
    now."""
    ahead = build_app(sim_settings, clock=TestClock(datetime.now(UTC) + timedelta(minutes=2)))
    try:
        t = Trader(ahead, new_user())
        t.sub_account_id = t.send(
            "create_sub_account", (cmd.CreateSubAccount, ahead.accounts.create), name="fast"
        )["data"]["subAccountId"]
        sub = t.sub_account_id
        t.send("deposit", (cmd.Deposit, ahead.accounts.deposit), subAccountId=sub, amount="5000")
        rules = t.send(
            "update_risk_rules",
            (cmd.UpdateRiskRules, ahead.accounts.update_risk_rules),
            role="admin",
            subAccountId=sub,
            maxOrdersPerMinute=2,
        )
        assert rules["ok"], rules
        answers = [
            t.send(
                "place_market_order",
                market(ahead),
                subAccountId=sub,
                symbol=BTC,
                side=side,
                qty="0.002",
            )
            for side in ("BUY", "SELL", "BUY")
        ]
        assert [a["ok"] for a in answers] == [True, True, False], answers
        assert answers[2]["error"]["code"] == "RATE_LIMITED"
        assert answers[2]["error"]["details"]["reasons"][0]["details"]["recent"] == 2
        assert orders_of(ahead, sub) == 2, "the refused order wrote nothing"
    finally:
        ahead.close()


def test_an_order_asking_a_leverage_re_margins_the_position_held(app: App, trader) -> None:
    """Wallet 4000, long 1 BTC at 20x (IM 3000). A BUY 1 asking 100x passes the margin check
    because the check re-margins the held position at the asked leverage (600 + 600 ≤ 4000),
    as Binance would. The position used to keep 20x once booked: 2 BTC at 20x is 6000 of
    margin on 4000 of equity. The symbol's leverage, position included, is now the order's."""
    t = trader("4000")
    sub = t.sub_account_id
    rules = t.send(
        "update_risk_rules",
        (cmd.UpdateRiskRules, app.accounts.update_risk_rules),
        role="admin",
        subAccountId=sub,
        maxLeverage=100,
        maxExposureMultiple=100,
    )
    assert rules["ok"], rules
    first = t.send(
        "place_market_order", market(app), subAccountId=sub, symbol=BTC, side="BUY", qty="1",
        leverage=20,
    )  # fmt: skip
    assert first["ok"], first
    second = t.send(
        "place_market_order", market(app), subAccountId=sub, symbol=BTC, side="BUY", qty="1",
        leverage=100,
    )  # fmt: skip
    assert second["ok"], second
    with unit_of_work(app.sessions) as s:
        position = s.execute(
            select(Position).where(Position.sub_account_id == sub, Position.closed_at.is_(None))
        ).scalar_one()
        wallet = s.get(SubAccount, sub).wallet_balance
        snap = compute_snapshot(
            wallet,
            open_positions(s, sub).values(),
            open_orders(s, sub),
            {BTC: D(60000)},
            app.instruments.all(),
        )
    assert (position.qty, position.leverage) == (D(2), 100)
    assert snap.available >= 0, snap
