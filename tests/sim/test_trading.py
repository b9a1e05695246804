"""Trading through ccxt binanceusdm against the simulator, numbers checked by hand."""

from __future__ import annotations

import itertools
from decimal import Decimal
from typing import Any

import ccxt
import pytest

from pms.sim.runner import SimServer
from tests.sim.conftest import BTC

D = Decimal


def depth(ex: Any, symbol: str = "BTCUSDT") -> tuple[list[list[D]], list[list[D]]]:
    book = ex.fapiPublicGetDepth({"symbol": symbol, "limit": 20})
    return (
        [[D(p), D(q)] for p, q in book["bids"]],
        [[D(p), D(q)] for p, q in book["asks"]],
    )


def walk(levels: list[list[D]], qty: D) -> tuple[D, D]:
    """(cost, qty) of taking ``qty`` from ``levels`` best first."""
    cost, left = D(0), qty
    for price, size in levels:
        take = min(left, size)
        cost += take * price
        left -= take
        if left == 0:
            break
    return cost, qty - left


def test_markets_load_with_filters_and_order_types(ex: Any) -> None:
    market = ex.market(BTC)
    assert market["swap"] and market["linear"] and market["settle"] == "USDT"
    assert market["precision"]["price"] == 0.1 and market["precision"]["amount"] == 0.001
    assert market["limits"]["cost"]["min"] == 100.0
    assert "MARKET" in market["info"]["orderTypes"] and "GTX" in market["info"]["timeInForce"]


def test_leverage_and_brackets(ex: Any) -> None:
    assert ex.set_leverage(10, BTC)["leverage"] == 10
    with pytest.raises(ccxt.BadRequest) as err:  # SOLUSDT tops out at 75x
        ex.set_leverage(100, "SOL/USDT:USDT")
    assert "-4028" in str(err.value)
    tiers = ex.fetch_leverage_tiers([BTC])[BTC]
    assert (tiers[0]["maxLeverage"], tiers[0]["maintenanceMarginRate"]) == (125, 0.004)
    # cum continuity: maintenance margin is the same on both sides of every boundary
    for lower, upper in itertools.pairwise(tiers):
        cap = D(str(lower["maxNotional"]))
        mm_low = cap * D(str(lower["info"]["maintMarginRatio"])) - D(str(lower["info"]["cum"]))
        mm_up = cap * D(str(upper["info"]["maintMarginRatio"])) - D(str(upper["info"]["cum"]))
        assert mm_low == mm_up


def test_fee_burn_flag_reads_back_and_rejects_other_values(ex: Any) -> None:
    assert ex.fapiPrivateGetFeeBurn()["feeBurn"] is False
    assert ex.fapiPrivatePostFeeBurn({"feeBurn": "true"}) == {"code": 200, "msg": "success"}
    assert ex.fapiPrivateGetFeeBurn()["feeBurn"] is True
    with pytest.raises(ccxt.BadRequest) as err:
        ex.fapiPrivatePostFeeBurn({"feeBurn": "yes"})
    assert "-1130" in str(err.value)
    assert ex.fapiPrivateGetFeeBurn()["feeBurn"] is True  # a refused change changes nothing
    ex.fapiPrivatePostFeeBurn({"feeBurn": "false"})
    assert ex.fapiPrivateGetFeeBurn()["feeBurn"] is False


def test_market_order_walks_the_book_and_pays_taker_fee(ex: Any, sim: SimServer) -> None:
    _, asks = depth(ex)
    qty = D("2.5")
    cost, filled = walk(asks, qty)
    assert filled == qty
    order = ex.create_order(BTC, "market", "buy", float(qty))
    info = order["info"]
    assert info["status"] == "FILLED" and D(info["executedQty"]) == qty
    assert D(info["cumQuote"]) == cost
    assert D(info["avgPrice"]) == (cost / qty).quantize(D("1e-8")).normalize()
    assert D(info["avgPrice"]) > asks[0][0]  # slippage: worse than the best ask
    trades = ex.fapiPrivateGetUserTrades({"symbol": "BTCUSDT"})
    fee = sum(D(t["commission"]) for t in trades)
    per_level = sum((D(t["qty"]) * D(t["price"]) * D("0.0005")).quantize(D("1e-8")) for t in trades)
    assert fee == per_level
    assert all(t["maker"] is False for t in trades)
    assert D(sim.admin("/sim/state")["balances"]["USDT"]) == D("1000000") - fee
    # the taken liquidity is gone from the book until the mid moves
    _, after = depth(ex)
    assert after[0][0] > asks[0][0]


def test_limit_order_rests_partially_fills_then_fills(ex: Any, sim: SimServer) -> None:
    price = D("59000.0")
    order = ex.create_order(BTC, "limit", "buy", 40, float(price))
    assert order["status"] == "open" and order["filled"] == 0
    level = sim.call(lambda: sim.sim.state.markets["BTCUSDT"]._level_qty(price))
    # best ask = mid + tick: exactly one ask level (59000.0) now crosses the order
    sim.admin("/sim/price", {"symbol": "BTCUSDT", "price": "58999.9"})
    got = ex.fetch_order(order["id"], BTC)["info"]
    assert got["status"] == "PARTIALLY_FILLED" and D(got["executedQty"]) == level
    assert D(got["avgPrice"]) == price
    trade = ex.fapiPrivateGetUserTrades({"symbol": "BTCUSDT"})[-1]
    assert trade["maker"] is True and D(trade["price"]) == price
    assert D(trade["commission"]) == (level * price * D("0.0002")).quantize(D("1e-8"))
    # a deep move crosses many levels and completes the order at its own price
    sim.admin("/sim/price", {"symbol": "BTCUSDT", "price": "58000"})
    sim.admin("/sim/price", {"symbol": "BTCUSDT", "price": "57990"})
    done = ex.fetch_order(order["id"], BTC)
    assert done["status"] == "closed" and done["filled"] == 40 and done["average"] == 59000.0


def test_post_only_that_would_cross_is_rejected(ex: Any) -> None:
    with pytest.raises(ccxt.OrderNotFillable):
        ex.create_order(BTC, "limit", "buy", 0.01, 60100, params={"postOnly": True})
    resting = ex.create_order(BTC, "limit", "buy", 0.01, 59900, params={"postOnly": True})
    assert resting["status"] == "open" and resting["postOnly"] is True


def test_ioc_and_fok(ex: Any) -> None:
    _, asks = depth(ex)
    ioc = ex.create_order(BTC, "limit", "buy", 50, float(asks[1][0]), params={"timeInForce": "IOC"})
    assert ioc["status"] == "expired" and ioc["filled"] == float(asks[0][1] + asks[1][1])
    fok = ex.create_order(BTC, "limit", "buy", 50, float(asks[5][0]), params={"timeInForce": "FOK"})
    assert fok["status"] == "expired" and fok["filled"] == 0


def test_reduce_only_rejected_when_it_would_increase_and_clipped(ex: Any) -> None:
    with pytest.raises(ccxt.InvalidOrder) as err:  # no position at all
        ex.create_order(BTC, "market", "sell", 0.01, params={"reduceOnly": True})
    assert "-2022" in str(err.value)
    ex.create_order(BTC, "market", "buy", 0.01)
    with pytest.raises(ccxt.InvalidOrder):
        ex.create_order(BTC, "market", "buy", 0.01, params={"reduceOnly": True})
    closed = ex.create_order(BTC, "market", "sell", 0.05, params={"reduceOnly": True})
    assert closed["filled"] == 0.01 and closed["status"] == "expired"
    assert ex.fetch_positions([BTC]) == []


def test_amend_and_cancel(ex: Any, sim: SimServer) -> None:
    order = ex.create_order(BTC, "limit", "buy", 0.01, 59000)
    amended = ex.edit_order(order["id"], BTC, "limit", "buy", 0.02, 59100)
    assert (amended["amount"], amended["price"], amended["status"]) == (0.02, 59100.0, "open")
    with pytest.raises(ccxt.OperationRejected):  # -5027 nothing changes
        ex.edit_order(order["id"], BTC, "limit", "buy", 0.02, 59100)
    # amending across the book makes it a taker fill
    crossed = ex.edit_order(order["id"], BTC, "limit", "buy", 0.02, 60010)
    assert crossed["status"] == "closed"
    gtx = ex.create_order(BTC, "limit", "buy", 0.01, 59000, params={"postOnly": True})
    killed = ex.edit_order(gtx["id"], BTC, "limit", "buy", 0.01, 60500)
    assert killed["status"] == "canceled"
    other = ex.create_order(BTC, "limit", "sell", 0.01, 61000)
    assert ex.cancel_order(other["id"], BTC)["status"] == "canceled"
    with pytest.raises(ccxt.OrderNotFound):
        ex.cancel_order(other["id"], BTC)
    with pytest.raises(ccxt.OrderNotFound):
        ex.fetch_order("123", BTC)


def test_batch_orders_one_bad_item(ex: Any) -> None:
    results = ex.create_orders(
        [
            {"symbol": BTC, "type": "limit", "side": "buy", "amount": 0.01, "price": 59000},
            {"symbol": BTC, "type": "limit", "side": "buy", "amount": 0.001, "price": 59000},
            {"symbol": BTC, "type": "limit", "side": "sell", "amount": 0.01, "price": 61000},
        ]
    )
    # ccxt sorts parsed orders by timestamp, so error items come first
    assert sorted(r["status"] for r in results) == ["open", "open", "rejected"]
    assert "-4164" in str([r["info"] for r in results if r["status"] == "rejected"])
    placed = [r for r in results if r["status"] == "open"]
    # the raw answer keeps the request order: order, error, order
    raw = ex.fapiPrivatePostBatchOrders(
        {
            "batchOrders": [
                {"symbol": "BTCUSDT", "side": "BUY", "type": "LIMIT", "quantity": "0.010",
                 "price": "59000", "timeInForce": "GTC", "newClientOrderId": "b-1"},
                {"symbol": "BTCUSDT", "side": "SELL", "type": "LIMIT", "quantity": "0.010",
                 "price": "61000", "timeInForce": "GTC", "reduceOnly": True},
                {"symbol": "BTCUSDT", "side": "SELL", "type": "MARKET", "quantity": "-1"},
            ]
        }
    )  # fmt: skip
    assert raw[0]["clientOrderId"] == "b-1"
    assert (raw[1]["code"], raw[2]["code"]) == (-2022, -4003)
    cancelled = ex.cancel_orders([placed[0]["id"], "999"], BTC)
    assert [c["status"] for c in cancelled] == ["canceled"]  # ccxt drops the error item
    with pytest.raises(ccxt.OrderNotFound):  # body [{"code":-2011,...}]
        ex.fapiPrivateDeleteBatchOrders({"symbol": "BTCUSDT", "orderidlist": ["999"]})
    by_client = ex.cancel_orders([], BTC, params={"clientOrderIds": ["b-1"]})
    assert by_client[0]["status"] == "canceled"
    ex.cancel_order(placed[1]["id"], BTC)
    assert ex.fetch_open_orders() == []


def test_position_and_account_match_hand_calculation(ex: Any, sim: SimServer) -> None:
    ex.set_leverage(10, BTC)
    _, asks = depth(ex)
    cost, _ = walk(asks, D("1"))
    ex.create_order(BTC, "market", "buy", 1)
    fee = (asks[0][1] * asks[0][0] * D("0.0005")).quantize(D("1e-8"))  # first level
    sim.admin("/sim/price", {"symbol": "BTCUSDT", "price": "61000"})
    risk = ex.fapiPrivateV3GetPositionRisk({"symbol": "BTCUSDT"})[0]
    entry = cost  # qty 1
    upnl = D("61000") - entry
    assert D(risk["positionAmt"]) == 1 and D(risk["entryPrice"]) == entry.quantize(D("1e-8"))
    assert D(risk["unRealizedProfit"]) == upnl.quantize(D("1e-8"))
    assert D(risk["notional"]) == D("61000")
    assert D(risk["initialMargin"]) == D("6100")  # 61000 / 10
    assert D(risk["maintMargin"]) == D("61000") * D("0.005") - D("50")  # bracket 2, cum 50
    account = ex.fapiPrivateV3GetAccount()
    asset = account["assets"][0]
    wallet = D(asset["walletBalance"])
    trades = ex.fapiPrivateGetUserTrades({"symbol": "BTCUSDT"})
    assert fee == D(trades[0]["commission"])
    assert wallet == D("1000000") - sum(D(t["commission"]) for t in trades)
    assert D(asset["availableBalance"]) == (wallet + upnl - D("6100")).quantize(D("1e-8"))
    assert asset["updateTime"] > 0
    balance = ex.fetch_balance()["USDT"]
    assert balance["used"] == 6100.0
    positions = ex.fetch_positions()
    assert len(positions) == 1 and positions[0]["contracts"] == 1.0
    # closing realises the PnL at the sell price
    _, _ = depth(ex)
    ex.create_order(BTC, "market", "sell", 1, params={"reduceOnly": True})
    trade = ex.fapiPrivateGetUserTrades({"symbol": "BTCUSDT"})[-1]
    assert D(trade["realizedPnl"]) != 0
    assert ex.fetch_positions() == []


def test_margin_insufficient(ex: Any) -> None:
    ex.set_leverage(1, BTC)
    with pytest.raises(ccxt.InsufficientFunds):  # 20 BTC * 60000 / 1 > 1,000,000
        ex.create_order(BTC, "limit", "buy", 20, 59000)


def test_async_ccxt_client(sim: SimServer) -> None:
    import asyncio

    from pms.exchange.ccxt_factory import make_binanceusdm

    async def go() -> Any:
        ex = make_binanceusdm(sim.url, sim.api_key, sim.secret, asynchronous=True)
        try:
            await ex.load_markets()
            return await ex.create_order(BTC, "market", "buy", 0.01)
        finally:
            await ex.close()

    assert asyncio.run(go())["status"] == "closed"


def test_factory_keeps_binance_urls_without_base_url() -> None:
    from pms.exchange.ccxt_factory import make_binanceusdm

    ex = make_binanceusdm(None, "k", "s")
    assert ex.urls["api"]["fapiPrivate"].startswith("https://fapi.binance.com")
    assert ex.options["fetchCurrencies"] is False and ex.options["maxRetriesOnFailure"] == 0


def test_user_trades_filter_by_order_id(ex: Any, sim: SimServer) -> None:
    """``GET /fapi/v1/userTrades?symbol=&orderId=`` returns only that order's trades."""
    first = ex.fapiPrivatePostOrder(
        {"symbol": "BTCUSDT", "side": "BUY", "type": "MARKET", "quantity": "0.002"}
    )
    second = ex.fapiPrivatePostOrder(
        {"symbol": "BTCUSDT", "side": "SELL", "type": "MARKET", "quantity": "0.002"}
    )
    trades = ex.fapiPrivateGetUserTrades({"symbol": "BTCUSDT", "orderId": first["orderId"]})
    assert trades and {t["orderId"] for t in trades} == {first["orderId"]}
    assert second["orderId"] not in {t["orderId"] for t in trades}
