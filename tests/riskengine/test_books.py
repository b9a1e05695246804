"""Books are loaded for many sub-accounts at once: one statement whatever their number, the
same content as each loaded alone; the monitor's reloads run it with no transaction around it
(one round trip)."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from decimal import Decimal as D
from typing import Any

import psycopg2.extensions
import pytest
from sqlalchemy.exc import DBAPIError

from pms.accounts.service import house_account
from pms.app import App
from pms.db.models import Order, Position
from pms.db.session import unit_of_work
from pms.domain.enums import Side
from pms.risk.snapshot import OpenOrder, RiskPosition
from pms.riskengine.books import load_book, load_books, load_books_now
from tests.factories import funded_account
from tests.support import statements_on

BTC, ETH = "BTC/USDT:USDT", "ETH/USDT:USDT"


def order(sub: int, symbol: str, status: str, qty: str, filled: str, price: str | None) -> Order:
    return Order(
        client_order_id=f"pms-b{uuid.uuid4().hex[:10]}",
        sub_account_id=sub,
        symbol=symbol,
        side="SELL",
        type="LIMIT" if price else "MARKET",
        qty=D(qty),
        price=D(price) if price else None,
        reduce_only=False,
        post_only=False,
        leverage=5,
        status=status,
        filled_qty=D(filled),
        origin="manual",
        request_id=uuid.uuid4().hex,
    )


def test_books_of_many_accounts_in_one_statement(app: App) -> None:
    a, _ = funded_account(app.sessions, "1000")
    b, _ = funded_account(app.sessions, "2000")
    c, _ = funded_account(app.sessions, "3000")
    now = datetime.now(UTC)
    with unit_of_work(app.sessions) as s:
        house = house_account(s).id
        s.add_all(
            [
                Position(
                    sub_account_id=a, symbol=BTC, qty=D("0.5"), entry_price=D(60000), leverage=10
                ),
                Position(sub_account_id=a, symbol=ETH, qty=D(-2), entry_price=D(3000), leverage=5),
                Position(
                    sub_account_id=a,
                    symbol=ETH,
                    qty=D(0),
                    entry_price=D(2900),
                    leverage=5,
                    closed_at=now,
                ),
                order(a, BTC, "NEW", "0.2", "0", "61000"),
                order(a, BTC, "FILLED", "0.1", "0.1", None),
                order(b, ETH, "PARTIALLY_FILLED", "3", "1", "3100"),
            ]
        )

    with statements_on(app.db) as statements, unit_of_work(app.sessions) as s:
        books = load_books(s, [c, b, a, house, 10**9, a])

    assert len(statements) == 1, statements
    assert sorted(books) == sorted([a, b, c])  # not the house, not an unknown id
    assert books[a].wallet == D(1000) and books[c].wallet == D(3000)
    assert books[a].positions == {
        BTC: RiskPosition(symbol=BTC, qty=D("0.5"), entry=D(60000), leverage=10),
        ETH: RiskPosition(symbol=ETH, qty=D(-2), entry=D(3000), leverage=5),
    }
    assert books[a].orders == [
        OpenOrder(
            symbol=BTC, side=Side.SELL, qty=D("0.2"), price=D(61000), leverage=5, reduce_only=False
        )
    ]
    assert books[b].positions == {}
    assert books[b].orders == [
        OpenOrder(
            symbol=ETH, side=Side.SELL, qty=D(2), price=D(3100), leverage=5, reduce_only=False
        )
    ]
    assert books[c].symbols == set()
    with unit_of_work(app.sessions) as s:
        for sub in (a, b, c):
            assert load_book(s, sub) == books[sub]
        assert load_book(s, house) is None


@contextmanager
def _sent_by(raw: Any) -> Iterator[list[str]]:
    """Record what goes out on this psycopg2 connection, below SQLAlchemy."""
    sent: list[str] = []
    cursor_of = raw.cursor

    def cursor(*args: Any, **kwargs: Any) -> Any:
        inner = cursor_of(*args, **kwargs)

        class Recording:
            def __getattr__(self, name: str) -> Any:
                return getattr(inner, name)

            def execute(self, sql: str, params: Any = None) -> Any:
                sent.append(sql)
                return inner.execute(sql, params)

        return Recording()

    raw.cursor = cursor
    try:
        yield sent
    finally:
        del raw.cursor


def test_reload_outside_a_transaction_is_one_round_trip(app: App) -> None:
    a, _ = funded_account(app.sessions, "1000")
    b, _ = funded_account(app.sessions, "2000")
    with unit_of_work(app.sessions) as s:
        s.add_all(
            [
                Position(
                    sub_account_id=a, symbol=BTC, qty=D("0.5"), entry_price=D(60000), leverage=10
                ),
                order(a, ETH, "NEW", "2", "0.5", "3100"),
                order(b, BTC, "CANCELED", "1", "0", "50000"),
            ]
        )
    with unit_of_work(app.sessions) as s:
        expected = load_books(s, [a, b])

    with app.db.connect() as connection:
        raw = connection.connection.dbapi_connection
        with _sent_by(raw) as sent, statements_on(app.db) as through_sqlalchemy:
            books = load_books_now(connection, [b, a, 10**9])
        status = raw.info.transaction_status

    assert books == expected
    assert books[a].orders[0].qty == D("1.5") and books[b].orders == []
    assert through_sqlalchemy == []
    assert len(sent) == 1 and sent[0].startswith("EXECUTE pms_risk_books"), sent
    assert status == psycopg2.extensions.TRANSACTION_STATUS_IDLE  # nothing begun, no COMMIT


def test_reload_inside_a_transaction_reads_the_transaction(app: App) -> None:
    """Called on a connection in a transaction, the read runs in it: it sees the transaction's
    own writes (autocommit on the side would not)."""
    a, _ = funded_account(app.sessions, "1000")
    with app.db.connect() as connection:
        connection.exec_driver_sql(
            "UPDATE sub_accounts SET wallet_balance = 7 WHERE id = %(a)s", {"a": a}
        )
        books = load_books_now(connection, [a])
        connection.rollback()
    assert books[a].wallet == D(7)
    with unit_of_work(app.sessions) as s:
        assert load_book(s, a).wallet == D(1000)


def test_reload_after_the_connection_died_invalidates_it(app: App) -> None:
    """A read outside SQLAlchemy's execution still reports a dead connection as SQLAlchemy
    does (a DBAPIError, the pooled connection invalidated), so the next checkout reconnects."""
    a, _ = funded_account(app.sessions, "1000")
    with app.db.connect() as connection:
        with app.db.connect() as other:
            pid = connection.connection.dbapi_connection.get_backend_pid()
            other.exec_driver_sql(f"SELECT pg_terminate_backend({pid})")
            other.commit()
        with pytest.raises(DBAPIError):
            load_books_now(connection, [a])
        assert connection.invalidated
    with app.db.connect() as connection:
        assert load_books_now(connection, [a])[a].wallet == D(1000)
