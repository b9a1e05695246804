"""Round trips per command, counted (not timed): the order path's cost is dominated by
SQLAlchemy per statement, so a regression in the count is a regression in latency
(docs/performance.md). Raise a bound only with a reason written there."""

from __future__ import annotations

import uuid
from collections.abc import Callable
from typing import Any

import pytest

from pms.app import App
from pms.commands import schemas as cmd
from pms.db import folding
from tests.support import statements_on
from tests.trading.conftest import BTC, Trader

# A market order that opens or adds to a position with one fill.
# 51, then 22, then 12, then 10, then 9 (docs/performance.md); the acknowledgement is written in
# the statement that stores the result (a CTE), so recording it before the fills are booked adds
# none; the account's lock travels with the risk-context query; the booking writes order,
# position, ledger and balance in one statement
MAX_STATEMENTS_MARKET_ORDER = 9
MAX_EXCHANGE_CALLS_MARKET_ORDER = 2  # place + that order's trades
# Postgres round trips: the statements, plus COMMIT/ROLLBACK when they travel alone. BEGIN
# goes with each transaction's first statement and the intent's and the result's COMMIT with
# their last (pms.db.folding); only the booking transaction's COMMIT goes alone.
MAX_ROUND_TRIPS_MARKET_ORDER = MAX_STATEMENTS_MARKET_ORDER + 1


def test_market_order_statement_and_exchange_call_counts(
    app: App, trader: Callable[..., Trader], monkeypatch: pytest.MonkeyPatch
) -> None:
    t = trader("100000")
    calls: list[str] = []
    real_call = app.exchange._call  # type: ignore[attr-defined]

    def counting_call(action: str, method: str, params: dict[str, Any], **kw: Any) -> Any:
        calls.append(method)
        return real_call(action, method, params, **kw)

    def order() -> dict[str, Any]:
        return t.send(
            "place_market_order",
            (cmd.PlaceMarketOrder, app.orders.place_market),
            requestId=uuid.uuid4().hex,
            subAccountId=t.sub_account_id,
            symbol=BTC,
            side="BUY",
            qty="0.002",
        )

    assert order()["ok"]  # warm: instruments, time sync, prices
    alone: list[str] = []
    send_alone = folding._send

    def recording_send(raw: Any, sql: str) -> None:
        alone.append(sql)
        send_alone(raw, sql)

    monkeypatch.setattr(folding, "_send", recording_send)
    app.exchange._call = counting_call  # type: ignore[attr-defined]
    try:
        with statements_on(app.db) as statements:
            result = order()
    finally:
        app.exchange._call = real_call  # type: ignore[attr-defined]
    assert result["ok"] and result["data"]["status"] == "FILLED", result
    orders = [c for c in calls if c != "fapiPublicGetPremiumIndex"]  # price refresh may occur
    assert len(orders) <= MAX_EXCHANGE_CALLS_MARKET_ORDER, calls
    assert len(statements) <= MAX_STATEMENTS_MARKET_ORDER, "\n".join(statements)
    assert alone == ["COMMIT"] * len(alone)
    assert len(statements) + len(alone) <= MAX_ROUND_TRIPS_MARKET_ORDER, (statements, alone)


# A take of the user stream's fills (pms.streaming.fills): the accounts, orders and open
# positions locked straight from the trades and read, in one message (docs/performance.md,
# Session 9; three statements before), then per fill its INSERT and the one statement of its
# writes (Session 4).
TAKE_STATEMENTS = 1
PER_FILL_STATEMENTS = 2


def test_a_take_of_fills_costs_one_round_trip_and_two_per_fill(
    app: App, trader: Callable[..., Trader]
) -> None:
    from datetime import UTC, datetime
    from decimal import Decimal

    from pms.db.models import Order
    from pms.db.session import unit_of_work
    from pms.domain.enums import Side
    from pms.exchange.model import TradeReport
    from pms.execution.booking import book_fills

    accounts = [trader("100000").sub_account_id for _ in range(2)]
    coids = []
    with unit_of_work(app.sessions) as s:
        for n in range(4):
            coid = f"pms-g{uuid.uuid4().hex[:10]}"
            s.add(
                Order(
                    client_order_id=coid,
                    sub_account_id=accounts[n % 2],
                    symbol=BTC,
                    side="BUY",
                    type="MARKET",
                    qty=Decimal("0.002"),
                    leverage=10,
                    status="NEW",
                    filled_qty=Decimal(0),
                )
            )
            coids.append(coid)
    trades = [
        TradeReport(
            symbol=BTC,
            trade_id=f"g{uuid.uuid4().hex[:10]}",
            exchange_order_id=f"g{n}{uuid.uuid4().hex[:6]}",
            client_order_id=coid,
            side=Side.BUY,
            qty=Decimal("0.002"),
            price=Decimal("60000"),
            fee=Decimal("0.048"),
            fee_asset="USDT",
            is_maker=False,
            traded_at=datetime.now(UTC),
        )
        for n, coid in enumerate(coids)
    ]
    with statements_on(app.db) as statements, unit_of_work(app.sessions) as s:
        booked = book_fills(s, trades, "stream")
    assert all(b is not None for b in booked)
    bound = TAKE_STATEMENTS + PER_FILL_STATEMENTS * len(trades)
    assert len(statements) <= bound, "\n".join(statements)
