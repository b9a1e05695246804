"""The take of a fill booking (``lock_take``): one round trip locks the trades' sub-accounts,
orders and open positions and reads them back as JSON. What it hands the booking must be
exactly what the ORM would have loaded, copies already in the session must be overwritten
with the rows as locked, and every one of those rows must be locked."""

from __future__ import annotations

import threading
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Any

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from sqlalchemy import Engine, select, text
from sqlalchemy.orm import Session, sessionmaker

from pms.db.models import Order, Position, SubAccount
from pms.db.session import unit_of_work
from pms.execution.booking import book_fills
from pms.execution.take import lock_take
from tests.booking.helpers import BTC, ETH, make_order, trade
from tests.factories import funded_account

D = Decimal

# Money columns are numeric(36, 18): up to 18 integer digits, 18 decimals.
money = st.decimals(
    min_value=D("-999999999999.999999999999999999"),
    max_value=D("999999999999.999999999999999999"),
    places=18,
    allow_nan=False,
    allow_infinity=False,
)
positive = st.decimals(min_value=D("0.000000000000000001"), max_value=D("999999999999"), places=18)
prices = st.decimals(min_value=D(0), max_value=D("999999999999"), places=18)
moments = st.datetimes(
    min_value=datetime(2000, 1, 1), max_value=datetime(2100, 1, 1), timezones=st.just(UTC)
)


def _columns(obj: Any) -> dict[str, Any]:
    return {c.key: getattr(obj, c.key) for c in type(obj).__table__.columns}


def _same(took: Any, loaded: Any) -> None:
    """Equal, of the same type, and for a Decimal the same digits (scale included)."""
    a, b = _columns(took), _columns(loaded)
    assert a.keys() == b.keys()
    for key in a:
        assert type(a[key]) is type(b[key]), (key, a[key], b[key])
        assert a[key] == b[key], (key, a[key], b[key])
        if isinstance(a[key], Decimal):
            assert str(a[key]) == str(b[key]), (key, a[key], b[key])
        if isinstance(a[key], datetime):
            assert a[key].utcoffset() == b[key].utcoffset() == timedelta(0), key


@settings(
    max_examples=25, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(
    wallet=money,
    position=st.tuples(money, prices, money, money, st.integers(1, 125), moments),
    order=st.tuples(positive, positive, prices, st.sampled_from(["NEW", "PARTIALLY_FILLED"])),
)
def test_the_take_hands_over_the_rows_exactly_as_the_orm_loads_them(
    session_factory: sessionmaker[Session],
    wallet: Decimal,
    position: tuple[Decimal, Decimal, Decimal, Decimal, int, datetime],
    order: tuple[Decimal, Decimal, Decimal, str],
) -> None:
    sub, _ = funded_account(session_factory, "0")
    qty, entry, realized, fees, leverage, opened = position
    with unit_of_work(session_factory) as s:
        s.get_one(SubAccount, sub).wallet_balance = wallet
        common = {"sub_account_id": sub, "entry_price": entry, "leverage": leverage}
        common |= {"realized_pnl": realized, "fees_paid": fees, "opened_at": opened}
        s.add(Position(symbol=BTC, qty=qty, updated_at=opened, closed_at=None, **common))
        s.add(Position(symbol=ETH, qty=qty, updated_at=opened, closed_at=None, **common))
        # A closed row is not part of the take.
        s.add(Position(symbol=BTC, qty=D(0), updated_at=opened, closed_at=opened, **common))
    placed = make_order(session_factory, sub, "BUY", "1", status=order[3])
    with unit_of_work(session_factory) as s:
        row = s.get_one(Order, placed.id)
        row.qty, row.price, row.avg_price = order[0], order[1], order[2]

    with unit_of_work(session_factory) as s:
        accounts, orders, positions = lock_take(s, [trade(placed, "1", "1")])
        took = [accounts[sub], *orders, *positions[sub]]
    with unit_of_work(session_factory) as s:
        loaded = [
            s.get_one(SubAccount, sub),
            s.get_one(Order, placed.id),
            *s.execute(
                select(Position)
                .where(Position.sub_account_id == sub, Position.closed_at.is_(None))
                .order_by(Position.id)
            ).scalars(),
        ]
    assert list(accounts) == [sub] and len(orders) == 1 and len(positions[sub]) == 2
    for a, b in zip(took, loaded, strict=True):
        _same(a, b)


def test_an_account_without_positions_gets_an_empty_list_and_a_stranger_trade_nothing(
    session_factory: sessionmaker[Session],
) -> None:
    sub, _ = funded_account(session_factory, "100")
    placed = make_order(session_factory, sub, "BUY", "0.010")
    stranger = replace(
        trade(placed, "0.001", "100"), client_order_id="pms-none", exchange_order_id="none"
    )
    with unit_of_work(session_factory) as s:
        assert lock_take(s, [stranger]) == ({}, [], {})
        accounts, orders, positions = lock_take(s, [trade(placed, "0.001", "100")])
    assert list(accounts) == [sub] and [o.id for o in orders] == [placed.id]
    assert positions == {sub: []}


def test_a_copy_already_in_the_session_is_overwritten_with_the_row_as_locked(
    session_factory: sessionmaker[Session],
) -> None:
    sub, _ = funded_account(session_factory, "10000")
    placed = make_order(session_factory, sub, "BUY", "0.010")
    with unit_of_work(session_factory) as s:
        stale = s.get_one(Order, placed.id)  # filled 0, in this session
        stale_account = s.get_one(SubAccount, sub)
        assert stale.filled_qty == 0
        # Meanwhile another path books a first fill (and its fee).
        with unit_of_work(session_factory) as other:
            assert book_fills(other, [trade(placed, "0.004", "100", "0.1")], "stream")[0]
        booked = book_fills(s, [trade(placed, "0.006", "100", "0.2")], "stream")[0]
        assert booked is not None
        # The booking worked from the locked rows, not from the stale copies.
        assert stale.filled_qty == D("0.010") and stale.status == "FILLED"
        assert stale_account.wallet_balance == D("9999.7")
        [position] = [p for p in s.identity_map.values() if isinstance(p, Position)]
        assert position.qty == D("0.010")
    with unit_of_work(session_factory) as s:
        assert s.get_one(Order, placed.id).filled_qty == D("0.010")
        assert s.get_one(SubAccount, sub).wallet_balance == D("9999.7")


def test_pending_changes_of_the_caller_are_flushed_before_the_take(
    session_factory: sessionmaker[Session],
) -> None:
    sub, _ = funded_account(session_factory, "100")
    placed = make_order(session_factory, sub, "BUY", "0.010")
    with unit_of_work(session_factory) as s:
        s.get_one(Order, placed.id).exchange_order_id = "acked-1"
        _, [order], _ = lock_take(s, [trade(placed, "0.001", "100")])
        assert order.exchange_order_id == "acked-1"
    with unit_of_work(session_factory) as s:
        assert s.get_one(Order, placed.id).exchange_order_id == "acked-1"


def _blocked_on_a_lock(engine: Engine, done: threading.Event) -> bool:
    """Whether some backend of this database waits for a row lock (polled, bounded)."""
    for _ in range(400):
        if done.is_set():
            return False
        with engine.connect() as c:
            waiting = c.execute(
                text(
                    "SELECT count(*) FROM pg_stat_activity WHERE datname = current_database()"
                    " AND wait_event_type = 'Lock'"
                )
            ).scalar_one()
        if waiting:
            return True
        done.wait(0.01)
    return False


def test_the_take_waits_for_each_of_its_rows(
    session_factory: sessionmaker[Session], engine: Engine
) -> None:
    sub, _ = funded_account(session_factory, "10000")
    placed = make_order(session_factory, sub, "BUY", "0.010")
    with unit_of_work(session_factory) as s:
        assert book_fills(s, [trade(placed, "0.002", "100")], "stream")[0]
    second = make_order(session_factory, sub, "BUY", "0.010")
    with unit_of_work(session_factory) as s:
        position_id = s.execute(
            select(Position.id).where(Position.sub_account_id == sub)
        ).scalar_one()
    rows = {"sub_accounts": sub, "orders": second.id, "positions": position_id}
    for table, row_id in rows.items():
        holder = engine.connect()
        tx = holder.begin()
        holder.execute(text(f"SELECT 1 FROM {table} WHERE id = :id FOR UPDATE"), {"id": row_id})
        done = threading.Event()

        def take(done: threading.Event = done) -> None:
            with unit_of_work(session_factory) as s:
                lock_take(s, [trade(second, "0.001", "100")])
            done.set()

        thread = threading.Thread(target=take)
        thread.start()
        try:
            assert _blocked_on_a_lock(engine, done), f"the take did not wait for {table}"
            assert not done.is_set()
        finally:
            tx.rollback()
            holder.close()
            thread.join(10)
        assert done.is_set(), table


def test_an_order_found_after_its_accounts_lock_is_left_for_the_next_take(
    session_factory: sessionmaker[Session], engine: Engine
) -> None:
    """Order-sync finds a trade's order by symbol and exchange order id. If that id commits
    while the take's accounts' lock waits, the order's account is not held: the take leaves
    it open (order-sync books its fills later) and books the rest of the take."""
    sub_a, _ = funded_account(session_factory, "10000")
    sub_b, _ = funded_account(session_factory, "10000")
    with unit_of_work(session_factory) as s:  # A holds a position: its rows are in the read
        opened = make_order(session_factory, sub_a, "BUY", "0.010")
        assert book_fills(s, [trade(opened, "0.010", "100")], "stream")[0]
    late = make_order(session_factory, sub_a, "BUY", "0.010")
    with unit_of_work(session_factory) as s:
        s.get_one(Order, late.id).exchange_order_id = None  # not acknowledged yet
    other = make_order(session_factory, sub_b, "BUY", "0.010")
    by_pair = replace(trade(late, "0.004", "100", with_coid=False), exchange_order_id="late-x")

    holder = engine.connect()
    tx = holder.begin()  # the acknowledgement of `late`, and B's lock, held until it commits
    holder.execute(
        text("UPDATE orders SET exchange_order_id = 'late-x' WHERE id = :id"), {"id": late.id}
    )
    holder.execute(text("SELECT 1 FROM sub_accounts WHERE id = :id FOR UPDATE"), {"id": sub_b})
    done = threading.Event()
    booked: list[Any] = []

    def take() -> None:
        with unit_of_work(session_factory) as s:
            booked.extend(book_fills(s, [by_pair, trade(other, "0.010", "100")], "stream"))
        done.set()

    thread = threading.Thread(target=take)
    thread.start()
    try:  # the accounts' lock waits for B, having found no order by the pair yet
        assert _blocked_on_a_lock(engine, done)
    finally:
        tx.commit()
        holder.close()
        thread.join(10)
    assert done.is_set(), "the take failed"
    assert booked[0] is None and booked[1] is not None
    with unit_of_work(session_factory) as s:
        left = s.get_one(Order, late.id)
        assert left.filled_qty == 0 and left.exchange_order_id == "late-x"
        assert s.get_one(Order, other.id).filled_qty == D("0.010")
