"""Signing, timestamps, error codes and bad input: Binance's answers, never a 500."""

from __future__ import annotations

import hashlib
import hmac
import json
import time
from typing import Any

import ccxt
import pytest
import requests
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from pms.exchange.ccxt_factory import make_binanceusdm
from pms.sim.runner import SimServer
from tests.sim.conftest import BTC, Raw


def test_bad_signature_is_1022_and_ccxt_authentication_error(sim: SimServer) -> None:
    ex = make_binanceusdm(sim.url, sim.api_key, "wrong-secret")
    ex.load_markets()
    with pytest.raises(ccxt.AuthenticationError) as err:
        ex.fetch_balance()
    assert "-1022" in str(err.value)


def test_bad_api_key_is_2015_with_401(raw: Raw) -> None:
    resp = raw.send("GET", "/fapi/v3/account", key="nobody")
    assert resp.status_code == 401 and resp.json()["code"] == -2015
    assert raw.send("GET", "/fapi/v3/account", key="bad key!").json()["code"] == -2014


def test_stale_and_future_timestamps_are_1021(raw: Raw) -> None:
    now = int(time.time() * 1000)
    stale = raw.send("GET", "/fapi/v3/account", timestamp=now - 6000)
    assert stale.status_code == 400 and stale.json()["code"] == -1021
    future = raw.send("GET", "/fapi/v3/account", timestamp=now + 2000)
    assert future.json()["code"] == -1021
    widened = raw.send("GET", "/fapi/v3/account", {"recvWindow": 10000, "timestamp": now - 6000})
    assert widened.status_code == 200
    assert raw.send("GET", "/fapi/v3/account", {"recvWindow": 70000}).json()["code"] == -1131


def test_non_ascii_digits_in_timestamp_or_recv_window_are_1100_not_500(raw: Raw) -> None:
    """str.isdigit() accepts '²' and '٣'; int() refuses the first (a 500 before, found by
    the fuzz test below) and reads the second as 3."""
    for field, value in (("recvWindow", "²"), ("recvWindow", "٣"), ("timestamp", "١٧")):
        answer = raw.send("GET", "/fapi/v3/account", {field: value})
        assert answer.status_code == 400, (field, value, answer.text)
        assert answer.json()["code"] == -1100


def test_ccxt_stale_clock_raises_invalid_nonce(sim: SimServer) -> None:
    ex = make_binanceusdm(sim.url, sim.api_key, sim.secret)
    ex.load_markets()
    ex.options["timeDifference"] = 120_000  # our clock is 2 min behind
    with pytest.raises(ccxt.InvalidNonce):
        ex.fetch_balance()


def test_batch_orders_signed_over_raw_unencoded_bytes(raw: Raw) -> None:
    body = (
        'batchOrders=[{"symbol":"BTCUSDT","side":"BUY","type":"LIMIT","quantity":"0.010",'
        '"price":"59000","timeInForce":"GTC","reduceOnly":false}]'
        f"&timestamp={int(time.time() * 1000)}"
    )
    resp = raw.send("POST", "/fapi/v1/batchOrders", raw=body)
    assert resp.status_code == 200 and resp.json()[0]["status"] == "NEW"


def test_listen_key_needs_key_but_no_signature(raw: Raw) -> None:
    key = raw.send("POST", "/fapi/v1/listenKey", signed=False).json()["listenKey"]
    assert raw.send("POST", "/fapi/v1/listenKey", signed=False).json()["listenKey"] == key
    assert raw.send("PUT", "/fapi/v1/listenKey", signed=False).json() == {"listenKey": key}
    assert raw.send("DELETE", "/fapi/v1/listenKey", signed=False).json() == {}
    gone = raw.send("PUT", "/fapi/v1/listenKey", signed=False)
    assert gone.status_code == 400 and gone.json()["code"] == -1125
    assert raw.send("POST", "/fapi/v1/listenKey", signed=False, key="").status_code == 401


ORDER = {"symbol": "BTCUSDT", "side": "BUY", "type": "LIMIT", "timeInForce": "GTC"}


@pytest.mark.parametrize(
    ("params", "code"),
    [
        ({"quantity": "0", "price": "59000"}, -4003),
        ({"quantity": "-1", "price": "59000"}, -4003),
        ({"quantity": "0.0015", "price": "59000"}, -1111),
        ({"quantity": "0.01", "price": "59000.05"}, -1111),
        ({"quantity": "0.01", "price": "0"}, -4001),
        ({"quantity": "0.001", "price": "59000"}, -4164),
        ({"quantity": "abc", "price": "59000"}, -1102),
        ({"price": "59000"}, -1102),
        ({"quantity": "0.01"}, -1102),
        ({"quantity": "0.01", "price": "59000", "symbol": "NOPEUSDT"}, -1121),
        ({"quantity": "0.01", "price": "59000", "side": "UP"}, -1117),
        ({"quantity": "0.01", "price": "59000", "type": "STOP_MARKET"}, -4120),
        ({"quantity": "0.01", "price": "59000", "type": "ICEBERG"}, -1116),
        ({"quantity": "0.01", "price": "59000", "timeInForce": "XX"}, -1115),
        ({"quantity": "0.01", "price": "59000", "newClientOrderId": "bad id!"}, -4015),
        ({"quantity": "0.01", "price": "59000", "reduceOnly": "maybe"}, -1130),
        ({"quantity": "0.01", "price": "59000", "positionSide": "LONG"}, -4061),
    ],
)
def test_bad_order_input_gets_binance_codes(raw: Raw, params: dict[str, str], code: int) -> None:
    resp = raw.send("POST", "/fapi/v1/order", {**ORDER, **params})
    assert resp.status_code == 400, resp.text
    assert resp.json()["code"] == code


def test_off_tick_price_with_fine_tick_symbol(raw: Raw) -> None:
    # ETHUSDT tick 0.01: 3000.005 breaks precision; SOL step 0.01: 1.005 too
    resp = raw.send("POST", "/fapi/v1/order", {**ORDER, "symbol": "ETHUSDT", "quantity": "1",
                                                "price": "3000.005"})  # fmt: skip
    assert resp.json()["code"] == -1111


def test_unknown_order_and_route(raw: Raw) -> None:
    assert (
        raw.send("GET", "/fapi/v1/order", {"symbol": "BTCUSDT", "orderId": 5}).json()["code"]
        == -2013
    )
    assert (
        raw.send("DELETE", "/fapi/v1/order", {"symbol": "BTCUSDT", "orderId": 5}).json()["code"]
        == -2011
    )
    assert raw.send("GET", "/fapi/v1/order", {"symbol": "BTCUSDT"}).json()["code"] == -1102
    nope = raw.send("GET", "/fapi/v1/nothing", signed=False)
    assert nope.status_code == 404 and nope.json()["code"] == -5000


def test_rate_limit_headers(raw: Raw) -> None:
    resp = raw.send("POST", "/fapi/v1/order", {**ORDER, "quantity": "0.01", "price": "59000"})
    assert int(resp.headers["X-MBX-USED-WEIGHT-1M"]) >= 1
    assert int(resp.headers["X-MBX-ORDER-COUNT-10S"]) >= 1
    assert int(resp.headers["X-MBX-ORDER-COUNT-1M"]) >= 1


def test_ccxt_public_endpoints(ex: Any) -> None:
    assert ex.fetch_time() > 0
    assert ex.fetch_ticker(BTC)["last"] == 60000.0
    assert ex.fetch_funding_rate(BTC)["markPrice"] == 60000.0
    book = ex.fetch_order_book(BTC, 5)
    assert len(book["bids"]) == 5 and book["bids"][0][0] < book["asks"][0][0]


texts = st.one_of(
    st.text(max_size=12),
    st.sampled_from(["0", "-1", "1e9", "NaN", "Infinity", "0.0000001", "99999999999999999999",
                     "1,5", " ", "0x10", "\uff11", "true", "%00", "[]", "{}", "1e-30"]),
)  # fmt: skip
KEYS = ["symbol", "side", "type", "quantity", "price", "timeInForce", "reduceOnly",
        "newClientOrderId", "positionSide", "orderId", "origClientOrderId", "recvWindow"]  # fmt: skip


@settings(max_examples=150, deadline=None, suppress_health_check=list(HealthCheck))
@given(
    params=st.dictionaries(st.sampled_from(KEYS), texts, max_size=8),
    method=st.sampled_from(["POST", "PUT", "GET", "DELETE"]),
)
def test_fuzzed_order_params_never_500(raw: Raw, params: dict[str, str], method: str) -> None:
    base = {"symbol": "BTCUSDT", "side": "BUY", "type": "LIMIT", "quantity": "0.01",
            "price": "59000", "timeInForce": "GTC"}  # fmt: skip
    resp = raw.send(method, "/fapi/v1/order", {**base, **params})
    assert resp.status_code < 500, resp.text
    assert resp.status_code == 200 or "code" in resp.json()


@settings(max_examples=60, deadline=None, suppress_health_check=list(HealthCheck))
@given(body=st.text(max_size=80))
def test_fuzzed_raw_batch_body_never_500(raw: Raw, body: str) -> None:
    resp = raw.send("POST", "/fapi/v1/batchOrders", raw=f"batchOrders={body}&timestamp="
                    f"{int(time.time() * 1000)}")  # fmt: skip
    assert resp.status_code < 500, resp.text


# --- protocol details Binance documents (USDⓈ-M "General Info", "New Order", "Cancel Multiple
# Orders", "Position Information V2/V3", "Current All Open Orders", "Place Multiple Orders") ---

LIMIT = {"symbol": "BTCUSDT", "type": "LIMIT", "timeInForce": "GTC"}


def test_query_string_parameter_wins_over_body(sim: SimServer) -> None:
    """General Info: "If a parameter sent in both the query string and request body, the
    query string parameter will be used."."""
    query = "symbol=BTCUSDT&side=BUY&type=LIMIT&timeInForce=GTC&price=59000&quantity=0.002"
    body = f"quantity=0.003&timestamp={int(time.time() * 1000)}"
    sig = hmac.new(sim.secret.encode(), (query + body).encode(), hashlib.sha256).hexdigest()
    resp = requests.post(
        f"{sim.url}/fapi/v1/order?{query}",
        data=f"{body}&signature={sig}",
        headers={"X-MBX-APIKEY": sim.api_key,
                 "Content-Type": "application/x-www-form-urlencoded"},
        timeout=10,
    )  # fmt: skip
    assert resp.status_code == 200, resp.text
    assert resp.json()["origQty"] == "0.002"


def test_market_order_default_response_is_ack_not_final_result(raw: Raw) -> None:
    """New Order: ``newOrderRespType`` "ACK", "RESULT", default "ACK"; only with RESULT does a
    MARKET order answer its final FILLED state."""
    resp = raw.send(
        "POST",
        "/fapi/v1/order",
        {"symbol": "BTCUSDT", "side": "BUY", "type": "MARKET", "quantity": "0.002"},
    )
    assert resp.status_code == 200, resp.text
    body = resp.json()
    # ACK: the order as accepted, not its fills (RESULT was not asked for).
    assert body["status"] == "NEW" and body["executedQty"] == "0.000", body


def test_invalid_new_order_resp_type_is_1136(raw: Raw) -> None:
    """New Order: any other ``newOrderRespType`` is -1136 "Invalid newOrderRespType."."""
    resp = raw.send("POST", "/fapi/v1/order",
                    {**LIMIT, "side": "BUY", "quantity": "0.002", "price": "59000",
                     "newOrderRespType": "FULL"})  # fmt: skip
    assert resp.status_code == 400, resp.text
    assert resp.json()["code"] == -1136


def test_batch_cancel_accepts_documented_orig_client_order_id_list(raw: Raw) -> None:
    """Cancel Multiple Orders: ``orderIdList`` / ``origClientOrderIdList`` (ccxt sends them
    lowercase; both spellings are read)."""
    placed = raw.send("POST", "/fapi/v1/order",
                      {**LIMIT, "side": "BUY", "quantity": "0.002", "price": "59000",
                       "newClientOrderId": "audit-1"})  # fmt: skip
    assert placed.status_code == 200, placed.text
    resp = raw.send(
        "DELETE",
        "/fapi/v1/batchOrders",
        {"symbol": "BTCUSDT", "origClientOrderIdList": json.dumps(["audit-1"])},
    )
    assert resp.status_code == 200, resp.text
    assert resp.json()[0]["status"] == "CANCELED"


def test_position_risk_v3_with_symbol_omits_flat_symbol(raw: Raw) -> None:
    """Position Information V3: "only symbol that has position or open orders will be
    returned"."""
    rows = raw.send("GET", "/fapi/v3/positionRisk", {"symbol": "ETHUSDT"}).json()
    assert rows == []


def test_position_risk_v2_with_symbol_still_answers_a_flat_symbol(raw: Raw) -> None:
    """Position Information V2 lists symbols whatever their position: a requested flat symbol
    is answered (unlike v3)."""
    rows = raw.send("GET", "/fapi/v2/positionRisk", {"symbol": "ETHUSDT"}).json()
    assert [(r["symbol"], r["positionAmt"]) for r in rows] == [("ETHUSDT", "0.000")]


def test_open_orders_without_symbol_weighs_40(raw: Raw) -> None:
    """openOrders weight: "1 for a single symbol; 40 when the symbol parameter is omitted"."""
    before = int(raw.send("GET", "/fapi/v1/openOrders", {"symbol": "BTCUSDT"})
                 .headers["X-MBX-USED-WEIGHT-1M"])  # fmt: skip
    after = int(raw.send("GET", "/fapi/v1/openOrders").headers["X-MBX-USED-WEIGHT-1M"])
    assert after - before == 40


def test_batch_orders_count_5_on_the_10s_order_counter(raw: Raw) -> None:
    """batchOrders: "5 on 10s order rate limit(X-MBX-ORDER-COUNT-10S)"."""
    items = [{**LIMIT, "side": "BUY", "quantity": "0.002", "price": "59000"}]
    first = raw.send("POST", "/fapi/v1/batchOrders", {"batchOrders": json.dumps(items)}).headers[
        "X-MBX-ORDER-COUNT-10S"
    ]
    second = raw.send("POST", "/fapi/v1/batchOrders", {"batchOrders": json.dumps(items)}).headers[
        "X-MBX-ORDER-COUNT-10S"
    ]
    assert int(second) - int(first) == 5
