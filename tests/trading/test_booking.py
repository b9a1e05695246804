"""The one booking path: idempotent by trade id; positions open, add, reduce, close and flip
with exact realized PnL; a loss beyond the balance lands on the house insurance entry."""

from __future__ import annotations

from decimal import Decimal
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from sqlalchemy import func, select
from sqlalchemy.orm import Session, sessionmaker

from pms.accounts.ledger import ledger_sum
from pms.accounts.service import get_account, house_account
from pms.db.models import Fill, LedgerEntry, Order, Position
from pms.db.session import unit_of_work
from pms.domain.enums import Side
from pms.execution.booking import book_fills
from pms.execution.position_math import apply_fill
from tests.booking.helpers import book, make_order, trade
from tests.factories import funded_account

D = Decimal


def open_position(factory: sessionmaker[Session], sub: int) -> Position | None:
    with unit_of_work(factory) as s:
        return s.execute(
            select(Position).where(Position.sub_account_id == sub, Position.closed_at.is_(None))
        ).scalar_one_or_none()


def test_a_fill_reported_twice_is_booked_once(session_factory: sessionmaker[Session]) -> None:
    sub, _ = funded_account(session_factory, "1000")
    order = make_order(session_factory, sub, "BUY", "0.01")
    t = trade(order, "0.01", "60000", fee="0.3")
    assert book(session_factory, t) is True
    assert book(session_factory, t) is False  # the user stream reports it again
    with unit_of_work(session_factory) as s:
        assert (
            s.execute(
                select(func.count()).select_from(Fill).where(Fill.sub_account_id == sub)
            ).scalar_one()
            == 1
        )
        assert get_account(s, sub).wallet_balance == D("999.7") == ledger_sum(s, sub)
        assert s.get(Order, order.id).status == "FILLED"


def test_open_add_reduce_flip_close_with_exact_pnl(session_factory: sessionmaker[Session]) -> None:
    sub, _ = funded_account(session_factory, "10000")
    buy = make_order(session_factory, sub, "BUY", "0.03")
    book(session_factory, trade(buy, "0.01", "60000"))
    book(session_factory, trade(buy, "0.02", "61500"))  # entry (600 + 1230) / 0.03 = 61000
    pos = open_position(session_factory, sub)
    assert pos and pos.qty == D("0.03") and pos.entry_price == D("61000")
    sell = make_order(session_factory, sub, "SELL", "0.05")
    book(session_factory, trade(sell, "0.01", "62000"))  # reduce: +10
    book(
        session_factory, trade(sell, "0.04", "60000")
    )  # close 0.02 at -1000 each: -20; open short 0.02
    pos = open_position(session_factory, sub)
    assert pos and pos.qty == D("-0.02") and pos.entry_price == D("60000")
    cover = make_order(session_factory, sub, "BUY", "0.02")
    book(session_factory, trade(cover, "0.02", "59000"))  # short profit 0.02 * 1000 = +20
    assert open_position(session_factory, sub) is None
    with unit_of_work(session_factory) as s:
        pnl = [
            e.amount
            for e in s.execute(
                select(LedgerEntry)
                .where(LedgerEntry.sub_account_id == sub, LedgerEntry.kind == "REALIZED_PNL")
                .order_by(LedgerEntry.id)
            ).scalars()
        ]
        assert pnl == [D("10"), D("-20"), D("20")]
        assert get_account(s, sub).wallet_balance == D("10010")
        closed = s.execute(
            select(func.count())
            .select_from(Position)
            .where(Position.sub_account_id == sub, Position.closed_at.is_not(None))
        ).scalar_one()
        assert closed == 2


def test_loss_beyond_the_balance_is_absorbed_by_the_house(
    session_factory: sessionmaker[Session],
) -> None:
    sub, _ = funded_account(session_factory, "100")
    with unit_of_work(session_factory) as s:
        house_before = house_account(s).wallet_balance
    buy = make_order(session_factory, sub, "BUY", "0.01")
    book(session_factory, trade(buy, "0.01", "60000"))
    sell = make_order(session_factory, sub, "SELL", "0.01")
    book(
        session_factory, trade(sell, "0.01", "40000", fee="0.2")
    )  # loss 200 + fee on a 100 balance
    with unit_of_work(session_factory) as s:
        assert get_account(s, sub).wallet_balance == 0 == ledger_sum(s, sub)
        house = house_account(s)
        assert house.wallet_balance == house_before - D("100.2")
        insurance = (
            s.execute(
                select(LedgerEntry)
                .where(LedgerEntry.sub_account_id == house.id, LedgerEntry.kind == "INSURANCE")
                .order_by(LedgerEntry.id.desc())
            )
            .scalars()
            .first()
        )
        assert insurance is not None and insurance.amount == D("-100.2")


fills = st.lists(
    st.tuples(st.sampled_from([Side.BUY, Side.SELL]), st.integers(1, 50), st.integers(100, 200)),
    min_size=1,
    max_size=30,
)


@given(fills)
def test_realized_pnl_equals_cash_flow_when_flat(sequence: list[tuple[Side, int, int]]) -> None:
    qty, entry, realized, cash = D(0), D(0), D(0), D(0)
    for side, q, p in sequence:
        effect = apply_fill(qty, entry, side, D(q), D(p))
        qty, entry, realized = effect.qty, effect.entry, realized + effect.realized
        cash += D(q) * D(p) * (-side.sign)
    if qty != 0:  # close at a known price to compare
        last = D(150)
        effect = apply_fill(qty, entry, Side.SELL if qty > 0 else Side.BUY, abs(qty), last)
        realized += effect.realized
        cash += abs(qty) * last * (1 if qty > 0 else -1)
        assert effect.qty == 0
    assert abs(realized - cash) < D("1e-6")


@given(st.integers(1, 100), st.integers(1, 100), st.integers(1, 1000), st.integers(1, 1000))
def test_adding_keeps_entry_between_prices(q1: int, q2: int, p1: int, p2: int) -> None:
    first = apply_fill(D(0), D(0), Side.BUY, D(q1), D(p1))
    second = apply_fill(first.qty, first.entry, Side.BUY, D(q2), D(p2))
    assert min(p1, p2) <= second.entry <= max(p1, p2)
    assert second.realized == 0 and second.qty == q1 + q2


def test_apply_fill_refuses_nonsense() -> None:
    with pytest.raises(ValueError):
        apply_fill(D(0), D(0), Side.BUY, D(0), D(1))


def test_the_house_may_go_below_zero_and_never_insures_itself(
    session_factory: sessionmaker[Session],
) -> None:
    with unit_of_work(session_factory) as s:
        house = house_account(s)
        house_id, before = house.id, house.wallet_balance
        insured_before = s.execute(
            select(func.count())
            .select_from(LedgerEntry)
            .where(LedgerEntry.sub_account_id == house_id, LedgerEntry.kind == "INSURANCE")
        ).scalar_one()
    # A symbol of its own: the house may hold BTC taken over by other tests.
    buy = make_order(session_factory, house_id, "BUY", "0.01", "ZEC/USDT:USDT")
    book(session_factory, trade(buy, "0.01", "60000"))
    sell = make_order(session_factory, house_id, "SELL", "0.01", "ZEC/USDT:USDT")
    book(session_factory, trade(sell, "0.01", "10000", fee="0.1"))  # a 500 loss
    with unit_of_work(session_factory) as s:
        house = house_account(s)
        assert house.wallet_balance == before - D("500") - D("0.1")
        insured = s.execute(
            select(func.count())
            .select_from(LedgerEntry)
            .where(LedgerEntry.sub_account_id == house_id, LedgerEntry.kind == "INSURANCE")
        ).scalar_one()
        assert insured == insured_before


def _account_state(factory: sessionmaker[Session], sub: int) -> dict[str, object]:
    """Everything a booking writes for one sub-account, without ids."""
    with unit_of_work(factory) as s:

        def rows(model: Any, *attrs: str) -> list[tuple[object, ...]]:
            query = select(model).where(model.sub_account_id == sub).order_by(model.id)
            return [tuple(getattr(r, a) for a in attrs) for r in s.execute(query).scalars()]

        return {
            "wallet": get_account(s, sub).wallet_balance,
            "positions": rows(
                Position, "symbol", "qty", "entry_price", "realized_pnl", "fees_paid", "closed_at"
            ),
            "ledger": rows(LedgerEntry, "kind", "amount", "balance_after"),
            "fills": rows(Fill, "qty", "price", "fee", "realized_pnl", "side"),
            "orders": rows(Order, "status", "filled_qty", "avg_price"),
        }


steps = st.lists(
    st.tuples(
        st.integers(0, 2),  # which sub-account
        st.sampled_from([Side.BUY, Side.SELL]),
        st.integers(1, 6),  # qty in 0.001
        st.integers(590, 610),  # price in 100
        st.booleans(),  # the same fill reported again right after
    ),
    min_size=1,
    max_size=10,
)


@settings(
    max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(steps)
def test_a_take_books_exactly_what_one_fill_at_a_time_books(
    session_factory: sessionmaker[Session], sequence: list[tuple[int, Side, int, int, bool]]
) -> None:
    """The user stream's takes (book_fills: many fills, one transaction, locks up front) end
    in the same positions, ledger, fills and orders as booking each fill on its own."""
    worlds = []
    for _ in range(2):
        subs = [funded_account(session_factory, "100000")[0] for _ in range(3)]
        trades = []
        for who, side, q, p, again in sequence:
            order = make_order(session_factory, subs[who], side.value, str(D(q) / 1000))
            t = trade(order, str(D(q) / 1000), str(p * 100), fee=str(D(q) * D("0.024")))
            trades += [t, t] if again else [t]
        worlds.append((subs, trades))

    (one_subs, one_trades), (take_subs, take_trades) = worlds
    one_by_one = [book(session_factory, t) for t in one_trades]
    with unit_of_work(session_factory) as s:
        together = [b is not None for b in book_fills(s, take_trades, "test")]

    assert together == one_by_one
    for a, b in zip(one_subs, take_subs, strict=True):
        assert _account_state(session_factory, a) == _account_state(session_factory, b)
