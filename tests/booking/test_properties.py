"""Property tests of the booking path against Postgres: random fills on one symbol, each order
filled in one to three partial fills, fees in USDT; booked one by one or as one stream take."""

from __future__ import annotations

from decimal import Decimal

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from sqlalchemy import select
from sqlalchemy.orm import Session, sessionmaker

from pms.db.models import Fill, LedgerEntry, Order, Position, SubAccount
from pms.db.session import unit_of_work
from pms.execution.booking import book_fill, book_fills
from tests.booking.helpers import make_order, trade
from tests.factories import funded_account

D = Decimal
DEPOSIT = D("1000000")

orders_st = st.lists(
    st.tuples(
        st.sampled_from(["BUY", "SELL"]),
        st.lists(  # the order's partial fills: qty in 0.001, price in 0.1
            st.tuples(st.integers(1, 40), st.integers(550000, 650003)),
            min_size=1,
            max_size=3,
        ),
    ),
    min_size=1,
    max_size=8,
)


def _check(factory: sessionmaker[Session], sub: int, plan, events) -> None:
    with unit_of_work(factory) as s:
        account = s.get(SubAccount, sub)
        fills = list(
            s.execute(select(Fill).where(Fill.sub_account_id == sub).order_by(Fill.id)).scalars()
        )
        ledger = list(
            s.execute(
                select(LedgerEntry)
                .where(LedgerEntry.sub_account_id == sub)
                .order_by(LedgerEntry.id)
            ).scalars()
        )
        rows = list(
            s.execute(
                select(Position).where(Position.sub_account_id == sub).order_by(Position.id)
            ).scalars()
        )
        orders = {
            o.id: o for o in s.execute(select(Order).where(Order.sub_account_id == sub)).scalars()
        }
        # Positions: one open row at most, open rows non-zero, closed rows zero.
        open_rows = [p for p in rows if p.closed_at is None]
        assert len(open_rows) <= 1
        assert all(p.qty != 0 for p in open_rows)
        assert all(p.qty == 0 for p in rows if p.closed_at is not None)
        signed = sum((f.qty * (1 if f.side == "BUY" else -1) for f in fills), D(0))
        held = open_rows[0].qty if open_rows else D(0)
        assert held == signed
        # Realized PnL: the fills' sum equals the position rows' sum; fees too.
        realized = sum((f.realized_pnl for f in fills), D(0))
        fees = sum((f.fee for f in fills), D(0))
        assert sum((p.realized_pnl for p in rows), D(0)) == realized
        assert sum((p.fees_paid for p in rows), D(0)) == fees
        # Ledger: running balance, sum, wallet = deposits + realized - fees, exactly.
        running = D(0)
        for e in ledger:
            running += e.amount
            assert e.balance_after == running, (e.kind, e.amount, e.balance_after, running)
        assert account is not None
        assert account.wallet_balance == running == DEPOSIT + realized - fees
        # Cash-flow PnL: realized + unrealized at a final price equals what the trades paid.
        final = D("60000")
        cash = (
            sum((f.qty * f.price * (-1 if f.side == "BUY" else 1) for f in fills), D(0))
            + held * final
        )
        upnl = held * (final - open_rows[0].entry_price) if open_rows else D(0)
        assert abs(realized + upnl - cash) < D("0.000001"), (realized, upnl, cash)
        # Orders: filled qty and average price of their partial fills.
        for order_id, parts in plan.items():
            o = orders[order_id]
            q = sum((D(a) for a, _ in parts), D(0))
            cost = sum((D(a) * D(p) for a, p in parts), D(0))
            assert o.filled_qty == q
            assert abs(o.avg_price - cost / q) < D("1e-9")
            assert o.status == "FILLED"
        # Events agree with the database's final state.
        last_balance = [d for t, _, d in events if t.value == "balance_update"][-1]
        assert D(last_balance["balance"]) == account.wallet_balance
        last_pos = [d for t, _, d in events if t.value == "position_update"][-1]
        assert D(last_pos["qty"]) == held


def _build(factory: sessionmaker[Session], spec):
    sub, _ = funded_account(factory, str(DEPOSIT))
    trades, plan = [], {}
    for side, parts in spec:
        total = sum(q for q, _ in parts)
        order = make_order(factory, sub, side, str(D(total) / 1000))
        plan[order.id] = []
        for q, p in parts:
            qty, price = D(q) / 1000, D(p) / 10
            fee = (qty * price * D("0.0004")).quantize(D("1e-8"))
            trades.append(trade(order, str(qty), str(price), str(fee)))
            plan[order.id].append((str(qty), str(price)))
    return sub, trades, plan


@settings(
    max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(orders_st)
def test_fills_one_by_one_keep_every_invariant(
    session_factory: sessionmaker[Session], spec
) -> None:
    sub, trades, plan = _build(session_factory, spec)
    events = []
    for t in trades:
        with unit_of_work(session_factory) as s:
            booked = book_fill(s, t, "stream")
            assert booked is not None
            events += booked.events
    _check(session_factory, sub, plan, events)


@settings(
    max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(orders_st)
def test_fills_in_one_take_keep_every_invariant(
    session_factory: sessionmaker[Session], spec
) -> None:
    sub, trades, plan = _build(session_factory, spec)
    with unit_of_work(session_factory) as s:
        booked = book_fills(s, trades + trades, "stream")  # every fill reported twice
    assert all(b is not None for b in booked[: len(trades)])
    assert all(b is None for b in booked[len(trades) :])
    events = [e for b in booked if b is not None for e in b.events]
    _check(session_factory, sub, plan, events)
