"""Round trips per command, counted (not timed): the order path's cost is dominated by
SQLAlchemy per statement, so a regression in the count is a regression in latency
(docs/performance.md). Raise a bound only with a reason written there."""

from __future__ import annotations

import uuid
from collections.abc import Callable
from typing import Any

from sqlalchemy import event

from pms.app import App
from pms.commands import schemas as cmd
from tests.trading.conftest import BTC, Trader

# A market order that opens or adds to a position with one fill.
# 51, then 22, then 12, then 10 (docs/performance.md); the acknowledgement is written in the statement
# that stores the result (a CTE), so recording it before the fills are booked adds none; the
# booking writes order, position, ledger and balance in one statement
MAX_STATEMENTS_MARKET_ORDER = 10
MAX_EXCHANGE_CALLS_MARKET_ORDER = 2  # place + that order's trades


def test_market_order_statement_and_exchange_call_counts(
    app: App, trader: Callable[..., Trader]
) -> None:
    t = trader("100000")
    statements: list[str] = []

    def count(*args: Any) -> None:
        statements.append(args[2])

    calls: list[str] = []
    real_call = app.exchange._call  # type: ignore[attr-defined]

    def counting_call(action: str, method: str, params: dict[str, Any]) -> Any:
        calls.append(method)
        return real_call(action, method, params)

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
    event.listen(app.db, "before_cursor_execute", count)
    app.exchange._call = counting_call  # type: ignore[attr-defined]
    try:
        result = order()
    finally:
        event.remove(app.db, "before_cursor_execute", count)
        app.exchange._call = real_call  # type: ignore[attr-defined]
    assert result["ok"] and result["data"]["status"] == "FILLED", result
    orders = [c for c in calls if c != "fapiPublicGetPremiumIndex"]  # price refresh may occur
    assert len(orders) <= MAX_EXCHANGE_CALLS_MARKET_ORDER, calls
    assert len(statements) <= MAX_STATEMENTS_MARKET_ORDER, "\n".join(statements)
