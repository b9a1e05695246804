"""Our signer produces ccxt's ``sign`` output byte for byte (URL, body, headers, signature)."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from pms.exchange.ccxt_factory import make_binanceusdm
from pms.exchange.rest import endpoint
from pms.exchange.signer import Signer

NOW_MS = 1_764_000_000_123


@pytest.fixture(scope="module", params=[None, "http://127.0.0.1:8765"], ids=["binance", "sim"])
def ex(request: pytest.FixtureRequest) -> Iterator[Any]:
    exchange = make_binanceusdm(request.param, "key-123", "secret-456")
    exchange.options["timeDifference"] = -42  # as load_time_difference leaves it
    exchange.milliseconds = lambda: NOW_MS
    yield exchange
    exchange.session.close()


FAST: list[tuple[str, dict[str, Any]]] = [
    (
        "fapiPrivatePostOrder",
        {
            "symbol": "BTCUSDT",
            "side": "BUY",
            "type": "MARKET",
            "quantity": "0.002",
            "newClientOrderId": "pms-17",
            "newOrderRespType": "RESULT",
        },
    ),
    (
        "fapiPrivatePostOrder",
        {
            "symbol": "BTCUSDT",
            "side": "SELL",
            "type": "LIMIT",
            "quantity": "1.5",
            "price": "60000.10",
            "timeInForce": "GTC",
            "newClientOrderId": "a/b:c.d_e-f",  # every character Binance allows
            "reduceOnly": "true",
        },
    ),
    ("fapiPrivateGetOrder", {"symbol": "ETHUSDT", "origClientOrderId": "pms-9"}),
    ("fapiPrivateDeleteOrder", {"symbol": "ETHUSDT", "origClientOrderId": "pms-9"}),
    (
        "fapiPrivatePutOrder",
        {
            "symbol": "BTCUSDT",
            "origClientOrderId": "x",
            "side": "BUY",
            "quantity": "1",
            "price": "2",
        },
    ),
    ("fapiPrivateGetUserTrades", {"symbol": "BTCUSDT", "orderId": "4011", "limit": 1000}),
    ("fapiPrivateGetUserTrades", {"symbol": "BTCUSDT", "startTime": 1764000000000}),
    ("fapiPrivateGetOpenOrders", {}),
    ("fapiPrivatePostLeverage", {"symbol": "BTCUSDT", "leverage": 20}),
    ("fapiPrivateV3GetPositionRisk", {}),
    ("fapiPrivateGetLeverageBracket", {}),
    ("fapiPrivatePostOrder", {"symbol": "BTCUSDT", "reduceOnly": True, "newClientOrderId": "b"}),
    ("fapiPrivateGetOrder", {"symbol": "BTC USDT", "origClientOrderId": "ü&=+%"}),  # escaped
    ("fapiPrivateGetOrder", {"symbol": "BTCUSDT", "price": 0.1, "qty": 1e-07}),
]
# Signed by ccxt itself: public, listen key, batch, the caller's own timestamp or recvWindow.
CCXT: list[tuple[str, dict[str, Any]]] = [
    ("fapiPublicGetPremiumIndex", {"symbol": "BTCUSDT"}),
    ("fapiPrivatePostListenKey", {}),
    ("fapiPrivatePostBatchOrders", {"batchOrders": [{"symbol": "BTCUSDT", "side": "BUY"}]}),
    ("fapiPrivateGetOpenOrders", {"recvWindow": 5000}),
    ("fapiPrivateGetOpenOrders", {"timestamp": 1}),
]


@pytest.mark.parametrize(("name", "params"), FAST + CCXT)
def test_signature_matches_ccxt(ex: Any, name: str, params: dict[str, Any]) -> None:
    ep = endpoint(ex, name)
    ours = Signer(ex).sign(ep.path, ep.api, ep.method, dict(params))
    theirs = ex.sign(ep.path, ep.api, ep.method, dict(params))
    assert ours == theirs


@pytest.mark.parametrize(("name", "params"), FAST)
def test_the_engines_calls_take_the_fast_path(ex: Any, name: str, params: dict[str, Any]) -> None:
    ep = endpoint(ex, name)
    assert Signer(ex)._fast(ep.path, ep.api, ep.method, dict(params)) is not None


def test_an_order_without_client_id_gets_ccxts_generated_one(ex: Any) -> None:
    ep = endpoint(ex, "fapiPrivatePostOrder")
    signed = Signer(ex).sign(ep.path, ep.api, ep.method, {"symbol": "BTCUSDT"})
    assert "newClientOrderId=" in signed["body"]


values = st.one_of(
    st.text(max_size=12),
    st.integers(min_value=-(10**12), max_value=10**12),
    st.booleans(),
    st.floats(allow_nan=False, allow_infinity=False),
)
keys = st.text(alphabet="abcdefghijklmnopqrstuvwxyzABCDEFGHIJ_", min_size=1, max_size=10)


@settings(max_examples=200, deadline=None)
@given(
    params=st.dictionaries(keys, values, max_size=6),
    name=st.sampled_from(["fapiPrivatePostOrder", "fapiPrivateGetOrder", "fapiPrivateDeleteOrder"]),
)
def test_signature_matches_ccxt_for_any_scalar_params(params: dict[str, Any], name: str) -> None:
    exchange = make_binanceusdm(None, "key-123", "secret-456")
    exchange.options["timeDifference"] = 17
    exchange.milliseconds = lambda: NOW_MS
    params.setdefault("newClientOrderId", "pms-1")
    ep = endpoint(exchange, name)
    ours = Signer(exchange).sign(ep.path, ep.api, ep.method, dict(params))
    theirs = exchange.sign(ep.path, ep.api, ep.method, dict(params))
    exchange.session.close()
    assert ours == theirs
