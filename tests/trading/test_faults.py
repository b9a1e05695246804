"""Exchange faults injected by the simulator: no duplicate order, a correct result, and
RATE_LIMITED / EXCHANGE_UNAVAILABLE only where nothing was placed."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from sqlalchemy import select

from pms.app import App, build_app
from pms.commands import schemas as cmd
from pms.config import Settings
from pms.db.models import Order, Request
from pms.db.session import unit_of_work
from pms.sim.runner import SimServer
from tests.trading.conftest import BTC, Trader


@pytest.fixture(scope="module")
def fast_app(sim_settings: Settings) -> Iterator[App]:
    built = build_app(sim_settings.model_copy(update={"exchange_timeout_ms": 800}))
    yield built
    built.close()


@pytest.fixture
def desk(fast_app: App, prices) -> Trader:
    from tests.factories import new_user

    t = Trader(fast_app, new_user())
    t.sub_account_id = t.send(
        "create_sub_account", (cmd.CreateSubAccount, fast_app.accounts.create), name="f"
    )["data"]["subAccountId"]
    t.send(
        "deposit",
        (cmd.Deposit, fast_app.accounts.deposit),
        subAccountId=t.sub_account_id,
        amount="5000",
    )
    return t


def buy(t: Trader, request_id: str) -> dict:
    return t.send(
        "place_market_order",
        (cmd.PlaceMarketOrder, t.app.orders.place_market),
        requestId=request_id,
        subAccountId=t.sub_account_id,
        symbol=BTC,
        side="BUY",
        qty="0.002",
    )


def exchange_orders(sim: SimServer, sub_orders: list[Order]) -> list[dict]:
    ids = {o.client_order_id for o in sub_orders}
    return [o for o in sim.admin("/sim/state")["orders"] if o["clientOrderId"] in ids]


def our_orders(app: App, sub: int) -> list[Order]:
    with unit_of_work(app.sessions) as s:
        return list(s.execute(select(Order).where(Order.sub_account_id == sub)).scalars())


@pytest.mark.parametrize("kind", ["503_unknown", "timeout"])
def test_unknown_outcome_is_resolved_by_client_order_id(
    fast_app: App, desk: Trader, sim: SimServer, kind: str
) -> None:
    fault = {"kind": kind, "count": 1, "path": "/fapi/v1/order", "retryAfter": 0}
    if kind == "timeout":
        fault["holdMs"] = 1500
    sim.admin("/sim/faults", fault)
    result = buy(desk, f"{kind}-{desk.sub_account_id}")
    assert result["ok"], result
    assert result["data"]["status"] == "FILLED"
    orders = our_orders(fast_app, desk.sub_account_id)
    assert len(orders) == 1 and len(exchange_orders(sim, orders)) == 1


@pytest.mark.parametrize(("kind", "code"), [("429", "RATE_LIMITED"), ("418", "RATE_LIMITED")])
def test_rate_limit_places_nothing_and_a_retry_succeeds(
    fast_app: App, desk: Trader, sim: SimServer, kind: str, code: str
) -> None:
    sim.admin("/sim/faults", {"kind": kind, "count": 1, "path": "/fapi/v1/order", "retryAfter": 0})
    request_id = f"{kind}-{desk.sub_account_id}"
    refused = buy(desk, request_id)
    assert not refused["ok"] and refused["error"]["code"] == code, refused
    assert refused["error"]["details"].get("retryAfterSec")
    orders = our_orders(fast_app, desk.sub_account_id)
    assert [o.status for o in orders] == ["REJECTED"]
    assert exchange_orders(sim, orders) == []
    with unit_of_work(fast_app.sessions) as s:
        assert s.get(Request, request_id).status == "PENDING", (
            "a retryable refusal leaves the request open"
        )
    # The gateway retries with the same requestId once the limit has passed: one new order.
    retried = buy(desk, request_id)
    assert retried["ok"], retried
    orders = our_orders(fast_app, desk.sub_account_id)
    assert sorted(o.status for o in orders) == ["FILLED", "REJECTED"]
    assert len(exchange_orders(sim, orders)) == 1
