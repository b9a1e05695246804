"""Locks are taken sub-account first, then the house (docs/architecture.md, *Concurrency*).
A stream take with a fill of the house's own (admin) order and a fill of a sub-account locks
its accounts by id, and the house is id 1: the house first. A worker booking that
sub-account's fill, whose loss the house insures, takes them the documented way round."""

from __future__ import annotations

import threading
from decimal import Decimal

from sqlalchemy import Engine, select, text
from sqlalchemy.orm import Session, sessionmaker

from pms.accounts.ledger import lock_account
from pms.db.models import Order, SubAccount
from pms.db.session import unit_of_work
from pms.execution.booking import book_fills, book_order_fill
from tests.booking.helpers import book, make_order, trade
from tests.factories import funded_account

D = Decimal


def _waiting_on_a_lock(engine: Engine) -> bool:
    with engine.connect() as c:
        return bool(
            c.execute(
                text(
                    "SELECT count(*) FROM pg_stat_activity WHERE datname = current_database()"
                    " AND wait_event_type = 'Lock'"
                )
            ).scalar_one()
        )


def test_a_take_with_a_house_fill_does_not_deadlock_with_an_insured_booking(
    session_factory: sessionmaker[Session], engine: Engine
) -> None:
    with unit_of_work(session_factory) as s:
        house = s.execute(select(SubAccount.id).where(SubAccount.is_house)).scalar_one()
    sub, _ = funded_account(session_factory, "50")
    assert house < sub
    book(session_factory, trade(make_order(session_factory, sub, "BUY", "0.01"), "0.01", "60000"))
    closing = make_order(session_factory, sub, "SELL", "0.01")
    h_buy = make_order(session_factory, house, "BUY", "0.01")
    # The stream's take: the house's fill and another fill of the same sub-account.
    other = make_order(session_factory, sub, "BUY", "0.01", "ETH/USDT:USDT")
    take = [trade(h_buy, "0.01", "50000"), trade(other, "0.01", "3000")]

    errors: list[BaseException] = []
    worker_has_sub = threading.Event()

    def worker() -> None:  # record_exchange_state's way: the account, then its order
        try:
            with unit_of_work(session_factory) as s:
                account = lock_account(s, sub)
                order = s.execute(
                    select(Order).where(Order.id == closing.id).with_for_update()
                ).scalar_one()
                worker_has_sub.set()
                for _ in range(500):  # until the stream's take waits for the sub-account
                    if _waiting_on_a_lock(engine):
                        break
                    threading.Event().wait(0.01)
                # -100 on a wallet of 50, flat after: the house insures 50 (locks the house).
                book_order_fill(s, account, order, trade(closing, "0.01", "50000"), "rest")
        except BaseException as exc:
            errors.append(exc)

    def stream() -> None:
        try:
            worker_has_sub.wait(10)
            with unit_of_work(session_factory) as s:
                book_fills(s, take, "stream")
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=worker), threading.Thread(target=stream)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(30)
    assert not errors, f"{type(errors[0]).__name__}: {str(errors[0]).splitlines()[0]}"
