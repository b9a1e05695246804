"""A placement whose outcome is unknown (503 after placing) and whose resolve-by-
clientOrderId is then rate limited (429 on GET /fapi/v1/order): the order IS on the exchange,
but the adapter raises RATE_LIMITED, the order service marks the intent REJECTED, and the
gateway's retry (same requestId, allowed: RATE_LIMITED leaves the request open) is taken as a
fresh decision: a second exchange order."""

from __future__ import annotations

from sqlalchemy import select

from pms.commands import schemas as cmd
from pms.db.models import Order
from pms.db.session import unit_of_work
from tests.trading.conftest import BTC


def _ours(app, sub):
    with unit_of_work(app.sessions) as s:
        return list(s.execute(select(Order).where(Order.sub_account_id == sub)).scalars())


def test_rate_limit_while_resolving_an_unknown_placement_duplicates_the_order(
    app, sim, trader
) -> None:
    t = trader()
    sim.admin(
        "/sim/faults",
        {"kind": "503_unknown", "count": 1, "path": "/fapi/v1/order", "method": "POST"},
    )
    sim.admin(
        "/sim/faults",
        {"kind": "429", "count": 1, "path": "/fapi/v1/order", "method": "GET", "retryAfter": 0},
    )
    rid = f"audit-resolve-429-{t.sub_account_id}"

    def buy():
        return t.send(
            "place_market_order",
            (cmd.PlaceMarketOrder, app.orders.place_market),
            requestId=rid,
            subAccountId=t.sub_account_id,
            symbol=BTC,
            side="BUY",
            qty="0.002",
        )

    first = buy()
    sim.admin("/sim/faults", method="DELETE")
    coids = {o.client_order_id: o.status for o in _ours(app, t.sub_account_id)}
    on_exchange = [o for o in sim.admin("/sim/state")["orders"] if o["clientOrderId"] in coids]
    # The order was placed (503 after processing) ...
    assert len(on_exchange) == 1, on_exchange
    statuses_after_first = dict(coids)
    # A retry of the open request must not place a second order.
    if not first["ok"]:
        buy()
    coids = {o.client_order_id for o in _ours(app, t.sub_account_id)}
    on_exchange = [o for o in sim.admin("/sim/state")["orders"] if o["clientOrderId"] in coids]
    assert len(on_exchange) == 1, (
        f"first answer {first['ok'] or first['error']['code']}, intent after it "
        f"{statuses_after_first}; exchange orders now: "
        f"{[(o['clientOrderId'], o['status']) for o in on_exchange]}"
    )
