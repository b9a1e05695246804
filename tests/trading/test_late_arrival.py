"""A placement that times out is resolved by one GET by clientOrderId; a "not found" is taken
as "nothing was placed" (``placed: False``) and the intent is closed REJECTED at once, while
the request may still reach the exchange within its recvWindow (the engine's own
PENDING_GRACE says an intent younger than 10 s may still be on its way). The order then
arrives and fills, unknown to the books (its intent is REJECTED, so neither order-sync nor a
resume looks at it), and the gateway's retry of the open request places a second order."""

from __future__ import annotations

import time
from collections.abc import Iterator

import pytest
from sqlalchemy import select

from pms.app import App, build_app
from pms.commands import schemas as cmd
from pms.config import Settings
from pms.db.models import Order
from pms.db.session import unit_of_work
from pms.sim.runner import SimServer
from tests.factories import new_user
from tests.support import wait_for
from tests.trading.conftest import BTC, Trader
from tests.trading.delaying_proxy import DelayingProxy


@pytest.fixture(scope="module")
def proxy(sim: SimServer) -> Iterator[DelayingProxy]:
    p = DelayingProxy(sim.port, b"POST /fapi/v1/order", delay_s=1.5, count=0)
    yield p
    p.close()


@pytest.fixture(scope="module")
def slow_app(sim_settings: Settings, proxy: DelayingProxy) -> Iterator[App]:
    built = build_app(
        sim_settings.model_copy(update={"sim_url": proxy.url, "exchange_timeout_ms": 800})
    )
    yield built
    built.close()


def _desk(app: App) -> Trader:
    t = Trader(app, new_user())
    t.sub_account_id = t.send(
        "create_sub_account", (cmd.CreateSubAccount, app.accounts.create), name="late"
    )["data"]["subAccountId"]
    t.send(
        "deposit", (cmd.Deposit, app.accounts.deposit), subAccountId=t.sub_account_id, amount="5000"
    )
    return t


def _on_exchange(sim: SimServer, client_order_ids: set[str]) -> list[dict]:
    return [o for o in sim.admin("/sim/state")["orders"] if o["clientOrderId"] in client_order_ids]


def _ours(app: App, sub: int) -> list[Order]:
    with unit_of_work(app.sessions) as s:
        return list(s.execute(select(Order).where(Order.sub_account_id == sub)).scalars())


def test_timed_out_placement_arriving_late_is_not_rejected_nor_placed_again(
    slow_app: App, sim: SimServer, proxy: DelayingProxy, prices
) -> None:
    t = Trader(slow_app, new_user())
    t.sub_account_id = t.send(
        "create_sub_account", (cmd.CreateSubAccount, slow_app.accounts.create), name="late"
    )["data"]["subAccountId"]
    t.send(
        "deposit",
        (cmd.Deposit, slow_app.accounts.deposit),
        subAccountId=t.sub_account_id,
        amount="5000",
    )
    rid = f"audit-late-{t.sub_account_id}"

    def buy() -> dict:
        return t.send(
            "place_market_order",
            (cmd.PlaceMarketOrder, slow_app.orders.place_market),
            requestId=rid,
            subAccountId=t.sub_account_id,
            symbol=BTC,
            side="BUY",
            qty="0.002",
        )

    proxy.delay_s = 1.5
    proxy.remaining = 1  # the next POST /fapi/v1/order reaches the exchange 1.5 s late
    first = buy()
    assert first["ok"] is False and first["error"]["code"] == "EXCHANGE_UNAVAILABLE", first
    ours = {o.client_order_id for o in _ours(slow_app, t.sub_account_id)}
    # ... and it does arrive: the first order was placed after all.
    wait_for(lambda: _on_exchange(sim, ours), 10, message="the late POST reaching the exchange")
    if not first["ok"]:
        buy()  # the gateway retries the open request, as docs/commands.md invites
    statuses = {o.client_order_id: o.status for o in _ours(slow_app, t.sub_account_id)}
    on_exchange2 = {
        o["clientOrderId"]: o["status"]
        for o in sim.admin("/sim/state")["orders"]
        if o["clientOrderId"] in statuses
    }
    assert len(on_exchange2) == 1, (
        f"intents {statuses}; exchange {on_exchange2}: one command, two exchange orders"
    )


def test_resume_of_an_unresolved_placement_does_not_send_it_again_within_recv_window(
    slow_app: App, sim: SimServer, proxy: DelayingProxy, prices
) -> None:
    """The first delivery's POST is in flight (it reaches the exchange 7 s later, within the
    recvWindow) and every resolve GET times out: EXCHANGE_UNAVAILABLE, the intent stays
    PENDING_NEW (correct). The gateway retries at once; ``_resume`` asks by clientOrderId,
    hears "no such order" and re-sends the same intent at once (no PENDING_GRACE, unlike
    cancel and order-sync). The first POST then lands too: a market order, closed by then,
    does not block its clientOrderId, so one command fills twice."""
    t = _desk(slow_app)
    rid = f"resume-{t.sub_account_id}"

    def buy() -> dict:
        return t.send(
            "place_market_order",
            (cmd.PlaceMarketOrder, slow_app.orders.place_market),
            requestId=rid,
            subAccountId=t.sub_account_id,
            symbol=BTC,
            side="BUY",
            qty="0.002",
        )

    started = time.monotonic()
    proxy.delay_s = 7.0
    proxy.remaining = 1
    sim.admin(
        "/sim/faults",
        {"kind": "timeout", "count": 4, "path": "/fapi/v1/order", "method": "GET", "holdMs": 1500},
    )
    first = buy()
    assert first["ok"] is False and first["error"]["code"] == "EXCHANGE_UNAVAILABLE", first
    assert first["error"]["details"].get("placed") is None, first  # unknown: left open
    sim.admin("/sim/faults", method="DELETE")
    assert time.monotonic() - started < 6.5, "too slow to show the race"
    retried = buy()
    # Past the moment the held POST reaches the exchange (7 s after it was sent): waiting for
    # "an order is there" would pass as soon as a wrongly re-sent one arrived first.
    time.sleep(max(0.0, 7.5 - (time.monotonic() - started)))
    statuses = {o.client_order_id: o.status for o in _ours(slow_app, t.sub_account_id)}
    placed = [
        (o["clientOrderId"], o["status"], o["executedQty"])
        for o in sim.admin("/sim/state")["orders"]
        if o["clientOrderId"] in statuses
    ]
    assert len(placed) == 1, (
        f"retry answered {retried['ok'] or retried['error']}; intents {statuses}; "
        f"exchange orders {placed}: one command, placed twice"
    )
