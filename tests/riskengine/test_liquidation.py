"""Liquidation modes: takeover moves positions to the house at mark with no exchange order;
a gap through the bankruptcy price leaves the balance at zero and the house pays the rest."""

from __future__ import annotations

from decimal import Decimal

from sqlalchemy import func, select

from pms.accounts.service import house_account
from pms.db.models import LedgerEntry, Order, Position
from pms.db.session import unit_of_work
from pms.sync.positions import sync_positions
from tests.riskengine.conftest import Harness
from tests.trading.conftest import BTC

D = Decimal


def house_btc(h: Harness) -> D:
    with unit_of_work(h.app.sessions) as s:
        house = house_account(s)
        qty = s.execute(
            select(Position.qty).where(
                Position.sub_account_id == house.id,
                Position.symbol == BTC,
                Position.closed_at.is_(None),
            )
        ).scalar_one_or_none()
        return qty or D(0)


def test_takeover_moves_positions_to_the_house_without_an_exchange_order(harness: Harness) -> None:
    h = harness
    sub = h.open_long("1000", "0.4", 50, mode="takeover").sub_account_id
    wallet, qty, entry = h.state(sub)
    house_before = house_btc(h)
    exchange_orders_before = len(h.sim.admin("/sim/state")["orders"])
    mark = h.mark_for_ratio(sub, D("1.01"))
    h.move(mark)
    assert len(h.sim.admin("/sim/state")["orders"]) == exchange_orders_before, "no exchange order"
    assert h.state(sub)[1] == 0
    assert house_btc(h) == house_before + qty
    # The sub-account realised qty·(mark − entry) at mark, no fee; not below zero.
    realized = qty * (mark - entry)
    expected_wallet = max(wallet + realized, D(0))
    assert h.state(sub)[0] == expected_wallet
    event = next(e for e in h.events(sub) if e.action == "liquidate_takeover")
    assert event.status == "DONE" and event.details["moved"] == [
        {"symbol": BTC, "qty": str(qty.normalize()), "price": str(mark.normalize())}
    ]
    # The master account's position equals the sum of the books, house included.
    assert sync_positions(h.app) == []


def test_gap_through_bankruptcy_zeroes_the_balance_and_the_house_pays(harness: Harness) -> None:
    h = harness
    sub = h.open_long("500", "0.2", 50).sub_account_id
    wallet, qty, entry = h.state(sub)
    with unit_of_work(h.app.sessions) as s:
        house = house_account(s)
        house_wallet = house.wallet_balance
    # Bankruptcy: wallet + qty·(m − entry) = 0 ⇒ m = entry − wallet/qty. Gap 3% below it.
    bankruptcy = entry - wallet / qty
    gap = (bankruptcy * D("0.97")).quantize(D("0.1"))
    h.move(gap)
    assert h.state(sub) == (D(0), D(0), D(0))
    with unit_of_work(h.app.sessions) as s:
        close = s.execute(
            select(Order).where(Order.sub_account_id == sub, Order.origin == "liquidation")
        ).scalar_one()
        fills = [
            f
            for f in h.sim.admin("/sim/state")["fills"]
            if str(f["orderId"]) == close.exchange_order_id
        ]
        assert fills and all(D(f["price"]) < bankruptcy for f in fills), (
            "the close filled below bankruptcy"
        )
        # What the close lost beyond the balance, fees included, worked from the exchange's fills.
        outcome = wallet + sum(
            D(f["qty"]) * (D(f["price"]) - entry) - D(f["commission"]) for f in fills
        )
        assert outcome < 0
        entries = dict(
            s.execute(
                select(LedgerEntry.kind, func.sum(LedgerEntry.amount))
                .where(LedgerEntry.sub_account_id == sub)
                .group_by(LedgerEntry.kind)
            ).all()
        )
        assert sum(entries.values()) == 0, "the sub-account ends at exactly zero"
        house = house_account(s)
        insurance = s.execute(
            select(func.sum(LedgerEntry.amount)).where(
                LedgerEntry.sub_account_id == house.id,
                LedgerEntry.kind == "INSURANCE",
                LedgerEntry.ref_id.like(f"%:{sub}"),
            )
        ).scalar_one()
        assert insurance == outcome
        assert house.wallet_balance == house_wallet + insurance
