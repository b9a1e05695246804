"""Order validation Binance applies and the simulator skips (so engine bugs stay hidden).

Binance facts relied on (USDⓈ-M docs, "Filters", "New Order", "Modify Order", error codes):
* PERCENT_PRICE (the simulator's own exchangeInfo advertises multiplierUp 1.05 /
  multiplierDown 0.95): BUY needs price <= markPrice * multiplierUp, SELL needs
  price >= markPrice * multiplierDown; -4016 "Price is higher than mark price multiplier cap.",
  -4024 "Price is lower than mark price multiplier floor.". Modify Order: "When the new
  quantity or price doesn't satisfy PRICE_FILTER / PERCENT_FILTER / LOT_SIZE, amendment will
  be rejected and the order will stay as it is."
* MAX_NUM_ORDERS (advertised limit 200): the maximum number of open orders on a symbol;
  -2025 "Reach max open order limit."
* Leverage brackets: a position's notional may not exceed the notionalCap of the bracket whose
  initialLeverage allows the current leverage; -2027 "Exceeded the maximum allowable position
  at current leverage." (POST /fapi/v1/leverage itself answers maxNotionalValue).
"""

from __future__ import annotations

import json

from tests.sim.conftest import Raw

LIMIT = {"symbol": "BTCUSDT", "type": "LIMIT", "timeInForce": "GTC"}


def _percent_price(raw: Raw) -> tuple[str, str]:
    info = raw.send("GET", "/fapi/v1/exchangeInfo", signed=False).json()
    btc = next(s for s in info["symbols"] if s["symbol"] == "BTCUSDT")
    f = next(f for f in btc["filters"] if f["filterType"] == "PERCENT_PRICE")
    return f["multiplierUp"], f["multiplierDown"]


def test_buy_limit_above_percent_price_cap_is_4016(raw: Raw) -> None:
    assert _percent_price(raw) == ("1.0500", "0.9500")
    # mark 60000: the cap is 63000.0; 64000 is far beyond it.
    resp = raw.send("POST", "/fapi/v1/order",
                    {**LIMIT, "side": "BUY", "quantity": "0.002", "price": "64000"})  # fmt: skip
    assert resp.status_code == 400, resp.text
    assert resp.json()["code"] == -4016


def test_sell_limit_below_percent_price_floor_is_4024(raw: Raw) -> None:
    # mark 60000: the floor is 57000.0.
    resp = raw.send("POST", "/fapi/v1/order",
                    {**LIMIT, "side": "SELL", "quantity": "0.002", "price": "56000"})  # fmt: skip
    assert resp.status_code == 400, resp.text
    assert resp.json()["code"] == -4024


def test_amend_to_price_beyond_percent_price_is_rejected_and_order_unchanged(raw: Raw) -> None:
    placed = raw.send(
        "POST", "/fapi/v1/order", {**LIMIT, "side": "SELL", "quantity": "0.002", "price": "61000"}
    ).json()
    resp = raw.send("PUT", "/fapi/v1/order",
                    {"symbol": "BTCUSDT", "orderId": placed["orderId"], "side": "SELL",
                     "quantity": "0.002", "price": "56000"})  # fmt: skip
    assert resp.status_code == 400, resp.text
    assert resp.json()["code"] == -4024
    now = raw.send("GET", "/fapi/v1/order", {"symbol": "BTCUSDT", "orderId": placed["orderId"]})
    assert now.json()["price"] == "61000.0" and now.json()["status"] == "NEW"


def test_max_num_orders_200_per_symbol_is_enforced_with_2025(raw: Raw) -> None:
    # 200 resting bids (batches of 5), all accepted; the 201st must be refused.
    for batch in range(40):
        items = [
            {**LIMIT, "side": "BUY", "quantity": "0.002",
             "price": str(59000 - batch * 5 - i)}
            for i in range(5)
        ]  # fmt: skip
        rows = raw.send(
            "POST",
            "/fapi/v1/batchOrders",
            {"batchOrders": json.dumps(items, separators=(",", ":"))},
        ).json()
        assert all("orderId" in r for r in rows), rows
    open_now = raw.send("GET", "/fapi/v1/openOrders", {"symbol": "BTCUSDT"}).json()
    assert len(open_now) == 200
    resp = raw.send("POST", "/fapi/v1/order",
                    {**LIMIT, "side": "BUY", "quantity": "0.002", "price": "58000"})  # fmt: skip
    assert resp.status_code == 400, resp.text
    assert resp.json()["code"] == -2025


def test_position_beyond_bracket_cap_at_current_leverage_is_2027(raw: Raw) -> None:
    lev = raw.send("POST", "/fapi/v1/leverage", {"symbol": "BTCUSDT", "leverage": 125}).json()
    assert lev["maxNotionalValue"] == "50000"  # the simulator knows the cap itself
    # 1 BTC at ~60000 = 60000 USDT notional > 50000: Binance refuses with -2027 (margin, 480
    # USDT of a 1,000,000 wallet, is not the issue).
    resp = raw.send(
        "POST",
        "/fapi/v1/order",
        {"symbol": "BTCUSDT", "side": "BUY", "type": "MARKET", "quantity": "1"},
    )
    assert resp.status_code == 400, resp.text
    assert resp.json()["code"] == -2027


def test_percent_price_bounds_only_the_side_that_trades_through_the_mark(raw: Raw) -> None:
    """A BUY far below the mark and a SELL far above it never trade on arrival: Binance bounds
    only BUY prices from above and SELL prices from below."""
    for side, price in (("BUY", "50000"), ("SELL", "70000")):
        resp = raw.send("POST", "/fapi/v1/order",
                        {**LIMIT, "side": side, "quantity": "0.002", "price": price})  # fmt: skip
        assert resp.status_code == 200 and resp.json()["status"] == "NEW", resp.text


def test_bracket_cap_counts_open_orders_of_the_side_and_amends(raw: Raw) -> None:
    """The cap holds for the position as if every open order of the side filled, and an
    amend that would pass it is refused (-2027) with the order left as it was."""
    raw.send("POST", "/fapi/v1/leverage", {"symbol": "BTCUSDT", "leverage": 125})  # cap 50000
    first = raw.send("POST", "/fapi/v1/order",
                     {**LIMIT, "side": "BUY", "quantity": "0.5", "price": "59000"}).json()  # fmt: skip
    assert first["status"] == "NEW", first  # 29500
    second = raw.send("POST", "/fapi/v1/order",
                      {**LIMIT, "side": "BUY", "quantity": "0.4", "price": "59000"})  # fmt: skip
    assert second.json()["code"] == -2027, second.text  # 29500 + 23600 > 50000
    amend = raw.send("PUT", "/fapi/v1/order",
                     {"symbol": "BTCUSDT", "orderId": first["orderId"], "side": "BUY",
                      "quantity": "0.9", "price": "59000"})  # fmt: skip
    assert amend.json()["code"] == -2027, amend.text
    now = raw.send("GET", "/fapi/v1/order", {"symbol": "BTCUSDT", "orderId": first["orderId"]})
    assert now.json()["origQty"] == "0.500" and now.json()["status"] == "NEW"
