"""Books are loaded for many sub-accounts at once: three queries whatever their number, the
same content as each loaded alone."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime
from decimal import Decimal as D

from pms.accounts.service import house_account
from pms.app import App
from pms.db.models import Order, Position
from pms.db.session import unit_of_work
from pms.domain.enums import Side
from pms.risk.snapshot import OpenOrder, RiskPosition
from pms.riskengine.books import load_book, load_books
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


def test_books_of_many_accounts_in_three_queries(app: App) -> None:
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

    assert len(statements) == 3, statements
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
