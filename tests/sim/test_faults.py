"""Injected faults behave as specified (SPEC §8)."""

from __future__ import annotations

import time
from typing import Any

import ccxt
import pytest

from pms.exchange.ccxt_factory import make_binanceusdm
from pms.sim.runner import SimServer
from tests.sim.conftest import BTC, Raw

ORDER_PATH = "/fapi/v1/order"


def orders(sim: SimServer) -> list[dict[str, Any]]:
    result: list[dict[str, Any]] = sim.admin("/sim/state")["orders"]
    return result


def test_503_unknown_places_the_order(ex: Any, sim: SimServer) -> None:
    sim.admin("/sim/faults", {"kind": "503_unknown", "count": 1, "path": ORDER_PATH})
    with pytest.raises(ccxt.OperationFailed) as err:  # -1000: status unknown
        ex.create_order(BTC, "limit", "buy", 0.01, 59000, params={"clientOrderId": "u-503"})
    assert "Unknown error" in str(err.value)
    assert [o["clientOrderId"] for o in orders(sim)] == ["u-503"]
    assert ex.fetch_order(None, BTC, params={"origClientOrderId": "u-503"})["status"] == "open"
    assert sim.admin("/sim/state")["faults"] == []


def test_429_and_418_carry_retry_after(ex: Any, sim: SimServer, raw: Raw) -> None:
    sim.admin("/sim/faults", {"kind": "429", "count": 1, "path": ORDER_PATH, "retryAfter": 7})
    with pytest.raises(ccxt.DDoSProtection):
        ex.create_order(BTC, "limit", "buy", 0.01, 59000)
    assert ex.last_response_headers["Retry-After"] == "7"
    assert orders(sim) == []
    sim.admin("/sim/faults", {"kind": "418", "count": 1, "path": "/fapi/v3/account"})
    resp = raw.send("GET", "/fapi/v3/account")
    assert resp.status_code == 418 and resp.json()["code"] == -1003
    assert resp.headers["Retry-After"] == "1"
    assert raw.send("GET", "/fapi/v3/account").status_code == 200  # count 1 only


def test_fault_counts_apply_to_next_n_matching(raw: Raw, sim: SimServer) -> None:
    sim.admin("/sim/faults", {"kind": "1021", "count": 2, "path": "/fapi/v3/account"})
    assert raw.send("GET", "/fapi/v1/openOrders").status_code == 200  # other path untouched
    codes = [raw.send("GET", "/fapi/v3/account").json().get("code") for _ in range(3)]
    assert codes == [-1021, -1021, None]


def test_timeout_holds_request_after_placing(sim: SimServer) -> None:
    ex = make_binanceusdm(sim.url, sim.api_key, sim.secret, timeout_ms=500)
    ex.load_markets()
    sim.admin("/sim/faults", {"kind": "timeout", "count": 1, "path": ORDER_PATH, "holdMs": 3000})
    started = time.monotonic()
    with pytest.raises(ccxt.RequestTimeout):
        ex.create_order(BTC, "limit", "buy", 0.01, 59000, params={"clientOrderId": "u-to"})
    assert time.monotonic() - started < 2.5
    assert [o["clientOrderId"] for o in orders(sim)] == ["u-to"]


def test_latency(raw: Raw, sim: SimServer) -> None:
    sim.admin("/sim/latency", {"ms": 300})
    started = time.monotonic()
    raw.send("GET", "/fapi/v1/time", signed=False)
    assert time.monotonic() - started >= 0.3
    sim.admin("/sim/latency", {"ms": 0})


def test_admin_rejects_bad_bodies(sim: SimServer) -> None:
    for path, body in [
        ("/sim/faults", {"kind": "nope"}),
        ("/sim/price", {"symbol": "BTCUSDT", "price": "-5"}),
        ("/sim/price", {"symbol": "NOPE", "price": "5"}),
        ("/sim/latency", {"ms": "x"}),
        ("/sim/clock", {"advanceMs": 5}),  # system clock
    ]:
        with pytest.raises(RuntimeError, match="400"):
            sim.admin(path, body)


def test_position_adjust_and_state(ex: Any, sim: SimServer) -> None:
    sim.admin("/sim/positions/adjust", {"symbol": "BTCUSDT", "qty": "0.5"})
    (pos,) = ex.fetch_positions()
    assert pos["contracts"] == 0.5 and pos["entryPrice"] == 60000.0
    state = sim.admin("/sim/state")
    assert set(state) >= {"orders", "fills", "positions", "balances", "faults"}
