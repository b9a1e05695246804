"""The order's lock and risk context in one round trip (pms.execution.context): the context
is read after the lock is granted, so it sees what the previous holder committed.

A single statement would not: ``... FOR UPDATE OF s`` on the context query itself waits for the
lock and re-reads the locked row, but its sub-selects keep the snapshot taken before the wait
(tried: the first test then sees the deposit and misses the committed intent)."""

from __future__ import annotations

import threading
from collections.abc import Callable
from decimal import Decimal

import pytest
from sqlalchemy import text

from pms.accounts.ledger import lock_account, post_entry
from pms.app import App
from pms.db.models import Order
from pms.db.session import unit_of_work
from pms.domain.enums import LedgerKind
from pms.errors import NotFound
from pms.execution.context import LockedAccount, OrderContextRows, lock_and_read_order_context
from tests.support import statements_on, wait_for
from tests.trading.conftest import BTC, Trader


def _waiting_for_a_lock(app: App, backend_pid: int) -> bool:
    with app.db.connect() as conn:
        query = text("SELECT count(*) FROM pg_locks WHERE pid = :pid AND NOT granted")
        return bool(conn.execute(query, {"pid": backend_pid}).scalar_one())


def test_the_context_sees_what_the_lock_holder_committed(
    app: App, trader: Callable[..., Trader]
) -> None:
    t = trader("1000")
    holder = app.sessions()
    reader = app.sessions()
    read: list[tuple[LockedAccount, OrderContextRows]] = []
    try:
        account = lock_account(holder, t.sub_account_id)
        post_entry(holder, account, LedgerKind.DEPOSIT, Decimal("250"), note="ctx-test")
        intent = Order(
            client_order_id="pms-ctx-test",
            sub_account_id=t.sub_account_id,
            symbol=BTC,
            side="BUY",
            type="LIMIT",
            qty=Decimal("0.003"),
            price=Decimal("50000"),
            leverage=10,
            status="NEW",
            filled_qty=Decimal(0),
        )
        holder.add(intent)
        holder.flush()
        reader_pid = reader.connection().exec_driver_sql("SELECT pg_backend_pid()").scalar_one()

        def read_context() -> None:
            read.append(lock_and_read_order_context(reader, t.sub_account_id, None))

        thread = threading.Thread(target=read_context)
        thread.start()
        wait_for(lambda: _waiting_for_a_lock(app, reader_pid), 10, message="the lock wait")
        assert not read  # still waiting for the holder
        holder.commit()
        thread.join(10)
        assert read, "the reader did not finish"
        locked, rows = read[0]
        assert locked.wallet_balance == Decimal("1250")  # the holder's deposit
        assert [(o.symbol, o.qty, o.price) for o in rows.open_orders] == [
            (BTC, Decimal("0.003"), Decimal("50000"))
        ]
        assert rows.next_order_id > intent.id
    finally:
        reader.rollback()
        reader.close()
        holder.close()


def test_the_lock_and_the_context_are_one_statement_sent_once(
    app: App, trader: Callable[..., Trader]
) -> None:
    t = trader("1000")
    with statements_on(app.db) as statements, unit_of_work(app.sessions) as s:
        locked, rows = lock_and_read_order_context(s, t.sub_account_id, "no-such")
    assert len(statements) == 1 and "FOR UPDATE" in statements[0], statements
    assert locked.id == t.sub_account_id and locked.owner_user_id == t.user
    assert locked.status == "ACTIVE" and locked.wallet_balance == Decimal("1000")
    assert rows.existing_order_id is None and rows.open_orders == [] and rows.positions == {}


def test_an_unknown_sub_account_is_not_found(app: App) -> None:
    with (
        pytest.raises(NotFound, match="sub-account 999999999 does not exist"),
        unit_of_work(app.sessions) as s,
    ):
        lock_and_read_order_context(s, 999_999_999, None)
