"""userTrades / allOrders time windows.

Binance facts (USDⓈ-M "Account Trade List", quoted in binance-futures-connector-python
``um_futures/account.py``; "All Orders"):
* userTrades: "If startTime and endTime are both not sent, then the last 7 days' data will be
  returned. The time between startTime and endTime cannot be longer than 7 days. The parameter
  fromId cannot be sent with startTime or endTime."
* allOrders: "The query time period must be less then 7 days (default as the recent 7 days)."
* Error codes: -1127 (interval too long: "More than %s hours between startTime and endTime."),
  -1128 ("Combination of optional parameters invalid.").

The engine's order-sync and resync rely on these windows (pms/exchange/binance.py walks spans in
7-day windows); a simulator that answers any span hides an engine that forgets to.
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from tests.sim.conftest import Clocked

DAY = 24 * 3_600_000


@pytest.fixture()
def old_and_new(clocked: Clocked) -> Iterator[tuple[Clocked, int, int]]:
    """One filled market order, then 8 days later another: (env, first time, second time)."""
    env = clocked
    env.sim.admin("/sim/reset", {})
    order = {
        "symbol": "BTCUSDT",
        "side": "BUY",
        "type": "MARKET",
        "quantity": "0.002",
        "newOrderRespType": "RESULT",
    }
    first = env.send("POST", "/fapi/v1/order", order).json()
    assert first["status"] == "FILLED", first
    env.advance(8 * DAY)
    second = env.send("POST", "/fapi/v1/order", order).json()
    assert second["status"] == "FILLED", second
    yield env, first["updateTime"], second["updateTime"]


def test_user_trades_without_window_returns_only_last_7_days(
    old_and_new: tuple[Clocked, int, int],
) -> None:
    env, _, t2 = old_and_new
    rows = env.send("GET", "/fapi/v1/userTrades", {"symbol": "BTCUSDT"}).json()
    assert [r["time"] for r in rows] == [t2], rows


def test_all_orders_without_window_returns_only_last_7_days(
    old_and_new: tuple[Clocked, int, int],
) -> None:
    env, _, t2 = old_and_new
    rows = env.send("GET", "/fapi/v1/allOrders", {"symbol": "BTCUSDT"}).json()
    assert [r["updateTime"] for r in rows] == [t2], rows


def test_user_trades_span_longer_than_7_days_is_rejected(
    old_and_new: tuple[Clocked, int, int],
) -> None:
    env, t1, t2 = old_and_new
    resp = env.send("GET", "/fapi/v1/userTrades",
                    {"symbol": "BTCUSDT", "startTime": t1 - 1, "endTime": t2})  # fmt: skip
    assert resp.status_code == 400, resp.text
    assert resp.json()["code"] == -1127


def test_user_trades_from_id_with_start_time_is_rejected(
    old_and_new: tuple[Clocked, int, int],
) -> None:
    env, _, t2 = old_and_new
    resp = env.send("GET", "/fapi/v1/userTrades",
                    {"symbol": "BTCUSDT", "fromId": 1, "startTime": t2 - 1000})  # fmt: skip
    assert resp.status_code == 400, resp.text
    assert resp.json()["code"] == -1128


def test_all_orders_span_longer_than_7_days_is_rejected(
    old_and_new: tuple[Clocked, int, int],
) -> None:
    env, t1, t2 = old_and_new
    resp = env.send("GET", "/fapi/v1/allOrders",
                    {"symbol": "BTCUSDT", "startTime": t1 - 1, "endTime": t2})  # fmt: skip
    assert resp.status_code == 400 and resp.json()["code"] == -1127, resp.text


def test_start_time_alone_reads_the_7_days_after_it_and_from_id_alone_has_no_window(
    old_and_new: tuple[Clocked, int, int],
) -> None:
    """Only ``startTime``: the 7 days from it (the older trade alone). Only ``fromId``: by id,
    whatever the age (both trades)."""
    env, t1, t2 = old_and_new
    rows = env.send("GET", "/fapi/v1/userTrades", {"symbol": "BTCUSDT", "startTime": t1}).json()
    assert [r["time"] for r in rows] == [t1], rows
    first_id = rows[0]["id"]
    rows = env.send("GET", "/fapi/v1/userTrades", {"symbol": "BTCUSDT", "fromId": first_id}).json()
    assert [r["time"] for r in rows] == [t1, t2], rows
