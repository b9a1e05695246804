"""``fetch_order_trades_between`` walks Binance's userTrades limits: at most 7 days between
startTime and endTime, at most 1000 rows per answer. The venue here is a stand-in for
``GET /fapi/v1/userTrades`` that enforces both (the simulator enforces neither)."""

from __future__ import annotations

import itertools
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

import pytest

from pms.exchange.binance import TRADE_WINDOW_MS, BinanceExchange
from pms.sim.runner import SimServer

BTC = "BTC/USDT:USDT"
T0 = int(datetime(2026, 11, 1, tzinfo=UTC).timestamp() * 1000)
MINUTE, DAY = 60_000, 86_400_000


def venue(trades: list[dict[str, Any]], calls: list[tuple[int, int]]) -> Callable[..., Any]:
    def call(action: str, method: str, params: dict[str, Any]) -> list[dict[str, Any]]:
        assert method == "fapiPrivateGetUserTrades"
        start, end = params["startTime"], params["endTime"]
        if end - start > TRADE_WINDOW_MS:  # Binance: -4181-like refusal
            raise AssertionError(f"window of {(end - start) / DAY:.2f} days")
        calls.append((start, end))
        rows = [
            t
            for t in trades
            if start <= t["time"] <= end and str(t["orderId"]) == params["orderId"]
        ]
        return sorted(rows, key=lambda t: t["time"])[: params["limit"]]

    return call


def trade(i: int, order_id: int, time: int) -> dict[str, Any]:
    return {
        "id": i,
        "orderId": order_id,
        "symbol": "BTCUSDT",
        "side": "BUY",
        "price": "60000",
        "qty": "0.001",
        "commission": "0.024",
        "commissionAsset": "USDT",
        "maker": True,
        "time": time,
    }


@pytest.fixture
def bx(sim: SimServer, adapter: Callable[..., BinanceExchange]) -> BinanceExchange:
    return adapter(sim.url)


def test_twenty_days_with_a_burst_of_2500_fills_in_one_minute(
    bx: BinanceExchange, monkeypatch: pytest.MonkeyPatch
) -> None:
    trades = [trade(i, 77, T0 + i * DAY // 2) for i in range(40)]  # every 12 h for 20 days
    burst_at = T0 + 9 * DAY + 3 * MINUTE
    trades += [trade(1000 + i, 77, burst_at + i * 10) for i in range(2500)]  # 25 s of fills
    trades += [trade(9000 + i, 78, T0 + i * DAY) for i in range(20)]  # another order's
    calls: list[tuple[int, int]] = []
    monkeypatch.setattr(bx, "_call", venue(trades, calls))

    got = bx.fetch_order_trades_between(BTC, "77", T0, T0 + 20 * DAY)

    assert [t.trade_id for t in got] == [
        str(t["id"]) for t in sorted(trades, key=lambda t: t["time"]) if t["orderId"] == 77
    ]
    assert len(got) == 40 + 2500
    assert all(end - start <= TRADE_WINDOW_MS for start, end in calls)
    # The windows that answered cover the span without a gap or an overlap.
    answered = sorted(
        (s, e)
        for s, e in calls
        if not any(s <= a and b <= e and (a, b) != (s, e) for a, b in calls)
    )
    assert answered[0][0] == T0 and answered[-1][1] == T0 + 20 * DAY
    assert all(b[0] == a[1] + 1 for a, b in itertools.pairwise(answered))
    assert any(e - s < MINUTE for s, e in calls), "the full window was halved"


def test_an_empty_span_asks_once_per_window(
    bx: BinanceExchange, monkeypatch: pytest.MonkeyPatch
) -> None:
    calls: list[tuple[int, int]] = []
    monkeypatch.setattr(bx, "_call", venue([], calls))
    assert bx.fetch_order_trades_between(BTC, "77", T0, T0 + 15 * DAY) == []
    assert len(calls) == 3  # 7 + 7 + 1 days
