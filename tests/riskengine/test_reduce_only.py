"""Reduce-only orders a smaller position no longer covers are cancelled, on the exchange.

"Reduce-only" on Binance is judged against the master account's position, the sum of every
sub-account's: with another sub-account keeping the master long, a take-profit left behind by
a closed long would fill and open a short its sub-account never had checked. The risk monitor
sees such a book on the reload that follows the booking, and enforcement cancels the orders
that no longer fit (oldest kept first). Real simulator, in-process enforcement.
"""

from __future__ import annotations

from datetime import UTC, datetime
from decimal import Decimal
from typing import Any

from pms.app import App
from pms.clock import TestClock
from pms.commands import schemas as cmd
from pms.db.models import Order
from pms.db.session import unit_of_work
from pms.domain.enums import Side
from pms.risk.snapshot import OpenOrder, RiskPosition
from pms.riskengine.books import AccountBook
from pms.riskengine.reduce_only import has_uncovered
from pms.sim.runner import SimServer
from tests.riskengine.conftest import Harness
from tests.trading.conftest import BTC, Trader

D = Decimal
REASON = "reduce-only orders exceed the position"


def take_profit(t: Trader, qty: str, price: str) -> dict[str, Any]:
    placed = t.send(
        "place_limit_order",
        (cmd.PlaceLimitOrder, t.app.orders.place_limit),
        subAccountId=t.sub_account_id,
        symbol=BTC,
        side="SELL",
        qty=qty,
        price=price,
        reduceOnly=True,
    )
    assert placed["ok"] and placed["data"]["status"] == "NEW", placed
    return placed["data"]


def statuses(h: Harness, *orders: dict[str, Any]) -> list[tuple[str, str]]:
    """(ours, the exchange's) status of each order."""
    out = []
    for o in orders:
        with unit_of_work(h.app.sessions) as s:
            ours = s.get(Order, o["orderId"]).status
        theirs = h.app.exchange.fetch_order(BTC, o["clientOrderId"])
        assert theirs is not None
        out.append((ours, theirs.status))
    return out


def test_a_take_profit_is_cancelled_once_its_position_is_closed(harness: Harness) -> None:
    h = harness
    h.open_long("100000", "0.5", 10)  # another sub-account: the master stays long
    t = h.open_long("5000", "0.01", 10)
    sub = t.sub_account_id
    tp = take_profit(t, "0.01", "62000")
    h.monitor.reload([sub])
    assert (sub, REASON) not in h.enforced  # covered: left alone

    h.close_position(t)
    h.monitor.reload([sub])  # what the change feed does after the close's booking

    assert (sub, REASON) in h.enforced
    assert statuses(h, tp) == [("CANCELED", "CANCELED")]
    assert h.state(sub)[1] == 0


def test_the_oldest_take_profits_that_still_fit_are_kept(harness: Harness) -> None:
    h = harness
    h.open_long("100000", "0.5", 10)
    t = h.open_long("5000", "0.03", 10)
    sub = t.sub_account_id
    older = take_profit(t, "0.01", "62000")
    newer = take_profit(t, "0.02", "62500")  # together they cover the long of 0.03

    sold = t.send(
        "place_market_order",
        (cmd.PlaceMarketOrder, h.app.orders.place_market),
        subAccountId=sub,
        symbol=BTC,
        side="SELL",
        qty="0.02",
        reduceOnly=True,
    )
    assert sold["ok"], sold
    h.monitor.reload([sub])

    # A long of 0.01 is left: the older 0.01 still fits and stays; the newer 0.02 does not.
    assert h.state(sub)[1] == D("0.01")
    assert statuses(h, older, newer) == [("NEW", "NEW"), ("CANCELED", "CANCELED")]


def test_a_cancel_that_failed_is_asked_again_a_second_later(app: App, sim: SimServer) -> None:
    """The exchange refuses the cancel (429): the order stays working, the monitor does not ask
    again on every reload, and asks again once a second has passed (``revisit``)."""
    clock = TestClock(datetime(2026, 12, 3, tzinfo=UTC))
    h = Harness(app, sim, monitor_clock=clock)
    h.open_long("100000", "0.5", 10)
    t = h.open_long("5000", "0.01", 10)
    sub = t.sub_account_id
    tp = take_profit(t, "0.01", "62000")
    h.close_position(t)

    sim.admin("/sim/faults", {"kind": "429", "count": 1, "path": "/fapi/v1/order", "retryAfter": 0})
    h.monitor.reload([sub])
    assert h.enforced.count((sub, REASON)) == 1
    assert statuses(h, tp) == [("NEW", "NEW")]  # the cancel was refused

    h.monitor.reload([sub])
    clock.advance(0.999)
    h.monitor.revisit()
    assert h.enforced.count((sub, REASON)) == 1  # not asked twice within the second

    clock.advance(0.001)
    h.monitor.revisit()
    assert h.enforced.count((sub, REASON)) == 2
    assert statuses(h, tp) == [("CANCELED", "CANCELED")]
    clock.advance(5)
    h.monitor.revisit()
    assert h.enforced.count((sub, REASON)) == 2  # covered now: nothing left to ask


def test_a_market_close_in_flight_does_not_make_a_take_profit_uncovered() -> None:
    """Before the close's fill is booked the position still covers the take-profit; a market
    order in flight (price None) is never a candidate either."""
    book = AccountBook(
        sub_account_id=1,
        wallet=D(1000),
        status=None,  # type: ignore[arg-type]
        tier=None,  # type: ignore[arg-type]
        mode=None,  # type: ignore[arg-type]
        thresholds=None,  # type: ignore[arg-type]
        positions={BTC: RiskPosition(symbol=BTC, qty=D("0.5"), entry=D(60000), leverage=10)},
        orders=[
            OpenOrder(BTC, Side.SELL, D("0.5"), D(70000), 10, reduce_only=True),
            OpenOrder(BTC, Side.SELL, D("0.5"), None, 10, reduce_only=True),
        ],
    )
    assert not has_uncovered(book)
    book.positions = {}
    assert has_uncovered(book)
    book.orders = book.orders[1:]  # only the close in flight
    assert not has_uncovered(book)
