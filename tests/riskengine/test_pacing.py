"""Enforcement holds a new ADL cut or liquidation back while the account's market orders are
in flight (sent, fills not booked yet) and after a run of failures (pms.riskengine.pacing).

Without the first, a liquidation worked from positions about to change: its close was
refused (the order in flight already reserved part of the position) and recorded FAILED,
and a takeover handed the house a position that the booking then reopened on the account.
Without the second, a liquidation the exchange keeps refusing sent its refused orders again
at every re-enforcement, once a second."""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import datetime, timedelta
from decimal import Decimal

from hypothesis import given
from hypothesis import strategies as st
from sqlalchemy import func, select

from pms.commands import schemas as cmd
from pms.db.models import Order, Position, SubAccount
from pms.db.session import unit_of_work
from pms.riskengine.pacing import BACKOFF_FIRST, BACKOFF_MAX, backoff_delay, failed_run
from pms.sync.orders import sync_orders
from tests.riskengine.conftest import CatchingHarness
from tests.riskengine.test_failures import held, liquidation_orders, master_qty, open_btc_and_eth
from tests.trading.conftest import BTC, ETH, Trader

D = Decimal


# --- the backoff, pure -------------------------------------------------------------------


def test_backoff_doubles_from_one_second_up_to_a_minute() -> None:
    assert [backoff_delay(n).total_seconds() for n in range(9)] == [
        0,
        1,
        2,
        4,
        8,
        16,
        32,
        60,
        60,
    ]


@given(st.integers(min_value=1, max_value=10_000))
def test_backoff_grows_and_stays_capped(failures: int) -> None:
    delay = backoff_delay(failures)
    assert BACKOFF_FIRST <= delay <= BACKOFF_MAX
    assert backoff_delay(failures + 1) >= delay


def test_a_done_action_ends_the_run_of_failures() -> None:
    t0 = datetime(2026, 1, 1)
    rows = [("FAILED", t0), ("FAILED", t0 - timedelta(seconds=5)), ("DONE", None), ("FAILED", t0)]
    assert failed_run(rows) == (2, t0)
    assert failed_run([("DONE", t0), ("FAILED", t0)]) == (0, None)
    assert failed_run([]) == (0, None)


# --- on the simulator --------------------------------------------------------------------


@contextmanager
def left_to_the_stream(h: CatchingHarness) -> Iterator[None]:
    """The gateway's orders answered and their fills left to the user stream, with no
    stream here: unbooked until order-sync runs."""
    orders = h.app.orders
    before = orders.stream_books
    orders.stream_books = lambda: True
    try:
        yield
    finally:
        orders.stream_books = before


def close_in_flight(h: CatchingHarness, t: Trader, qty: str) -> int:
    """The trader's reduce-only market close of ``qty`` BTC: filled on the exchange, not
    booked. Its order id."""
    with left_to_the_stream(h):
        closed = t.send(
            "close_position",
            (cmd.ClosePosition, h.app.orders.close_position),
            subAccountId=t.sub_account_id,
            symbol=BTC,
            qty=qty,
        )
    assert closed["ok"], closed
    order_id = int(closed["data"]["orderId"])
    with unit_of_work(h.app.sessions) as s:
        order = s.get(Order, order_id)
        assert order is not None and (order.status, order.filled_qty) == ("NEW", 0)
    return order_id


def position(h: CatchingHarness, sub: int) -> D:
    return held(h, sub).get(BTC, D(0))


def house_btc(h: CatchingHarness) -> D:
    """The house's open BTC position (it takes over every liquidated account's)."""
    query = (
        select(Position.qty)
        .join(SubAccount, SubAccount.id == Position.sub_account_id)
        .where(SubAccount.is_house, Position.symbol == BTC, Position.closed_at.is_(None))
    )
    with unit_of_work(h.app.sessions) as s:
        return sum(s.execute(query).scalars(), start=D(0))


def price_at(h: CatchingHarness, mark: D) -> None:
    """The exchange's price moves; the monitor has not heard of it yet."""
    h.sim.admin("/sim/price", {"symbol": "BTCUSDT", "price": str(mark)})
    h.app.prices.forget()


def test_a_liquidation_waits_for_a_close_in_flight_instead_of_failing(
    catching: CatchingHarness,
) -> None:
    """The trader sold 0.2 of a 0.5 long at 57,900 (filled, not booked yet) when the
    monitor found the account past liquidation. The close used to be sent for the whole 0.5
    and refused (0.2 of it already on its way out), recorded FAILED. Now nothing is decided
    until the fill is booked; then the liquidation closes the 0.3 left."""
    h = catching
    t = h.open_long("1000", "0.5", 50)
    sub = t.sub_account_id
    price_at(h, D("57900"))  # equity 1000 - 0.5 · 2,100 < 0 whatever is closed at this price
    close_in_flight(h, t, "0.2")

    h.move(D("57900"))

    assert h.errors == []
    assert [(e.action, e.status) for e in h.events(sub)] == [("margin_call", "DONE")]
    assert liquidation_orders(h, sub) == [], "no close sent on positions about to change"
    assert position(h, sub) == D("0.5")
    assert h.account(sub).status == "RESTRICTED", "nothing decided yet: the trader can only reduce"

    h.clock.advance(1)
    h.reenforce(sub)  # the monitor asks again a second later: still in flight
    assert [e.action for e in h.events(sub)] == ["margin_call"]

    report = sync_orders(h.app)  # order-sync (or the stream) books the fill
    assert report.fills_booked >= 1
    assert position(h, sub) == D("0.3")
    h.reenforce(sub)

    assert h.errors == []
    assert [(e.action, e.status) for e in h.events(sub)] == [
        ("margin_call", "DONE"),
        ("liquidate_close", "DONE"),
    ]
    [(symbol, _, qty, status)] = liquidation_orders(h, sub)
    assert (symbol, qty, status) == (BTC, D("0.3"), "FILLED")
    assert position(h, sub) == 0
    assert h.account(sub).status == "ACTIVE"


def test_an_account_a_close_in_flight_brings_back_is_not_liquidated(
    catching: CatchingHarness,
) -> None:
    """Past liquidation on the booked 0.5, but the trader's 0.2 close in flight (filled at
    60,000) leaves a 0.3 position well inside its margin: worked from the booked positions,
    the liquidation would have closed an account that no longer needs it."""
    h = catching
    t = h.open_long("1000", "0.5", 50)
    sub = t.sub_account_id
    close_in_flight(h, t, "0.2")

    h.move(h.mark_for_ratio(sub, D("1.02")))
    assert [e.action for e in h.events(sub)] == ["margin_call"]

    sync_orders(h.app)
    h.reenforce(sub)

    assert h.errors == []
    assert [e.action for e in h.events(sub)] == ["margin_call"]
    assert liquidation_orders(h, sub) == []
    assert position(h, sub) == D("0.3")
    assert h.account(sub).status in ("ACTIVE", "RESTRICTED")


def test_a_takeover_waits_for_a_close_in_flight_so_the_account_ends_flat(
    catching: CatchingHarness,
) -> None:
    """A takeover moves the booked positions to the house at the mark. Taken over with 0.2 in
    flight, the house got 0.5 and the booking of the 0.2 sell then opened a 0.2 short on the
    liquidated account."""
    h = catching
    t = h.open_long("1000", "0.5", 50, mode="takeover")
    sub = t.sub_account_id
    house_before = house_btc(h)
    price_at(h, D("57900"))
    close_in_flight(h, t, "0.2")

    h.move(D("57900"))

    assert [e.action for e in h.events(sub)] == ["margin_call"]
    assert house_btc(h) == house_before

    sync_orders(h.app)
    h.reenforce(sub)

    assert h.errors == []
    assert [(e.action, e.status) for e in h.events(sub)] == [
        ("margin_call", "DONE"),
        ("liquidate_takeover", "DONE"),
    ]
    assert position(h, sub) == 0, "flat: no short reopened by a late booking"
    assert house_btc(h) - house_before == D("0.3")
    with unit_of_work(h.app.sessions) as s:
        open_orders = s.execute(
            select(Order.id).where(
                Order.sub_account_id == sub, Order.status.in_(("NEW", "PENDING_NEW"))
            )
        ).all()
    assert open_orders == []


def test_a_liquidation_the_exchange_keeps_refusing_is_retried_with_backoff(
    catching: CatchingHarness,
) -> None:
    """The exchange refuses the BTC close for 40 s (someone flattened the master account by
    hand). The monitor asks every second; the liquidation is tried at 0, 1, 3, 7, 15 and
    31 s (six FAILED events and six refused orders, not 41), and once the master account is
    back, the next attempt closes BTC and the account is ACTIVE again."""
    h = catching
    sub = open_btc_and_eth(h).sub_account_id
    outside = master_qty(h, "BTCUSDT")
    h.sim.admin("/sim/positions/adjust", {"symbol": "BTCUSDT", "qty": str(-outside)})
    try:
        h.move(D("57000"))  # equity ≈ 0: past liquidation
        attempts = [0]
        for second in range(1, 41):
            h.clock.advance(1)
            before = len(h.events(sub))
            h.reenforce(sub)
            if len(h.events(sub)) > before:
                attempts.append(second)
    finally:
        h.sim.admin("/sim/positions/adjust", {"symbol": "BTCUSDT", "qty": str(outside)})

    assert attempts == [0, 1, 3, 7, 15, 31]
    closes = [e for e in h.events(sub) if e.action == "liquidate_close"]
    assert [e.status for e in closes] == ["FAILED"] * 6
    sent = Counter((o[0], o[3]) for o in liquidation_orders(h, sub))
    assert sent == {(BTC, "REJECTED"): 6, (ETH, "FILLED"): 1}, "ETH closed at the first try"
    assert h.account(sub).status == "LIQUIDATING"
    assert list(held(h, sub)) == [BTC]

    h.clock.advance(22)  # 62 s: the next attempt is due 32 s after the last (31 s)
    h.reenforce(sub)
    assert len([e for e in h.events(sub) if e.action == "liquidate_close"]) == 6
    h.clock.advance(1)  # 63 s
    h.reenforce(sub)

    assert held(h, sub) == {}
    closes = [e for e in h.events(sub) if e.action == "liquidate_close"]
    assert [e.status for e in closes] == ["FAILED"] * 6 + ["DONE"]
    assert h.account(sub).status == "ACTIVE"


def test_a_market_order_stuck_open_does_not_hold_a_liquidation_back(
    catching: CatchingHarness,
) -> None:
    """A market order our books show open for five minutes is not in flight but stuck
    (order-sync reports such an order: closed on the exchange with fills it cannot find).
    Waiting for its booking would hold the liquidation back for ever."""
    h = catching
    t = h.open_long("1000", "0.5", 50)
    sub = t.sub_account_id
    with unit_of_work(h.app.sessions) as s:
        oid = int(s.execute(select(func.nextval("orders_id_seq"))).scalar_one())
        s.add(
            Order(
                id=oid,
                client_order_id=f"pms-{oid}",
                sub_account_id=sub,
                symbol=BTC,
                side="BUY",
                type="MARKET",
                qty=D("0.001"),
                leverage=50,
                status="NEW",
                filled_qty=D(0),
                exchange_order_id=f"stuck-{oid}",
                created_at=s.execute(select(func.now())).scalar_one() - timedelta(minutes=5),
            )
        )

    h.move(h.mark_for_ratio(sub, D("1.02")))

    closes = [e for e in h.events(sub) if e.action == "liquidate_close"]
    assert [e.status for e in closes] == ["DONE"], [e.details for e in closes]
    assert position(h, sub) == 0
