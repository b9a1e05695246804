"""A stream take mixing house fills and a sub-account fill whose loss the house insures: the
house ledger's running balance and its wallet stay consistent."""

from __future__ import annotations

from decimal import Decimal

from sqlalchemy import select
from sqlalchemy.orm import Session, sessionmaker

from pms.db.models import SubAccount
from pms.db.session import unit_of_work
from pms.execution.booking import book_fills
from tests.booking.helpers import book, ledger_rows, make_order, trade, wallet
from tests.factories import funded_account

D = Decimal


def test_house_ledger_stays_consistent_in_a_mixed_take(
    session_factory: sessionmaker[Session],
) -> None:
    with unit_of_work(session_factory) as s:
        house = s.execute(select(SubAccount.id).where(SubAccount.is_house)).scalar_one()
    sub, _ = funded_account(session_factory, "50")
    book(session_factory, trade(make_order(session_factory, sub, "BUY", "0.01"), "0.01", "60000"))
    h_buy = make_order(session_factory, house, "BUY", "0.02")
    h_sell = make_order(session_factory, house, "SELL", "0.02")
    s_sell = make_order(session_factory, sub, "SELL", "0.01")
    house_before = wallet(session_factory, house)
    take = [
        trade(h_buy, "0.02", "50000", fee="0.4"),
        trade(s_sell, "0.01", "50000", fee="0.2"),  # -100 - 0.2 on 50: house insures 50.2
        trade(h_sell, "0.02", "51000", fee="0.4"),  # house +20
    ]
    with unit_of_work(session_factory) as s:
        assert all(b is not None for b in book_fills(s, take, "stream"))
    assert wallet(session_factory, sub) == 0
    house_after = wallet(session_factory, house)
    assert house_after == house_before - D("0.4") - D("50.2") + D("20") - D("0.4")
    rows = ledger_rows(session_factory, house)
    running = D(0)
    for kind, amount, after in rows:
        running += amount
        assert after == running, (kind, amount, after, running)
    assert running == house_after
