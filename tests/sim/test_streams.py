"""WebSocket streams: user data in order, listen-key expiry, drops, depth continuity."""

from __future__ import annotations

import itertools
import json
from collections.abc import Iterator
from datetime import UTC, datetime
from typing import Any

import pytest
from websockets.exceptions import ConnectionClosed
from websockets.sync.client import ClientConnection, connect

from pms.clock import TestClock
from pms.sim.runner import SimServer
from tests.sim.conftest import BTC, Raw


def recv(ws: ClientConnection, timeout: float = 3.0) -> dict[str, Any]:
    message: dict[str, Any] = json.loads(ws.recv(timeout=timeout))
    return message


def recv_until(ws: ClientConnection, pred: Any, limit: int = 200) -> dict[str, Any]:
    for _ in range(limit):
        msg = recv(ws)
        if pred(msg):
            return msg
    raise AssertionError("no matching message")


def listen_key(raw: Raw) -> str:
    key: str = raw.send("POST", "/fapi/v1/listenKey", signed=False).json()["listenKey"]
    return key


def events(ws: ClientConnection, kind: str, n: int) -> list[dict[str, Any]]:
    out: list[dict[str, Any]] = []
    while len(out) < n:
        msg = recv(ws)
        if msg.get("e") == kind:
            out.append(msg)
    return out


def test_every_order_state_change_reaches_user_stream_in_order(
    ex: Any, sim: SimServer, raw: Raw
) -> None:
    key = listen_key(raw)
    with connect(f"{sim.ws_url}/ws/{key}") as ws:
        order = ex.create_order(BTC, "limit", "buy", 40, 59000)
        sim.admin("/sim/price", {"symbol": "BTCUSDT", "price": "58999.9"})  # partial
        ex.edit_order(order["id"], BTC, "limit", "buy", 30, 58000)
        ex.cancel_order(order["id"], BTC)
        ex.create_order(BTC, "market", "buy", 1)
        got = []
        while len(got) < 8:
            msg = recv(ws)
            if msg["e"] == "ORDER_TRADE_UPDATE":
                got.append((msg["o"]["x"], msg["o"]["X"]))
            else:
                assert msg["e"] == "ACCOUNT_UPDATE"
                assert msg["a"]["B"][0]["a"] == "USDT" and msg["a"]["P"][0]["s"] == "BTCUSDT"
    assert got[:5] == [
        ("NEW", "NEW"),
        ("TRADE", "PARTIALLY_FILLED"),
        ("AMENDMENT", "PARTIALLY_FILLED"),
        ("CANCELED", "CANCELED"),
        ("NEW", "NEW"),
    ]
    assert all(x == ("TRADE", "PARTIALLY_FILLED") for x in got[5:-1] if x[1] != "FILLED")


def test_trade_event_fields_and_private_ws_filter(ex: Any, sim: SimServer, raw: Raw) -> None:
    key = listen_key(raw)
    url = f"{sim.ws_url}/private/ws?listenKey={key}&events=ORDER_TRADE_UPDATE"
    with connect(url) as ws:
        ex.create_order(BTC, "market", "buy", 0.01)
        new, trade = recv(ws), recv(ws)
        assert new["o"]["x"] == "NEW" and trade["o"]["x"] == "TRADE"
        o = trade["o"]
        assert o["X"] == "FILLED" and o["l"] == "0.010" and o["N"] == "USDT" and o["m"] is False
        assert (
            o["t"] > 0 and float(o["L"]) > 60000 and float(o["n"]) > 0 and o["rp"] == "0.00000000"
        )
        ex.create_order(BTC, "market", "sell", 0.01, params={"reduceOnly": True})
        closing = events(ws, "ORDER_TRADE_UPDATE", 2)[1]["o"]
        assert closing["x"] == "TRADE" and closing["rp"] != "0.00000000"
        assert closing["t"] > o["t"]  # trade ids increase per symbol


def test_userstream_drop_skips_trade_events_only(ex: Any, sim: SimServer, raw: Raw) -> None:
    key = listen_key(raw)
    with connect(f"{sim.ws_url}/ws/{key}") as ws:
        sim.admin("/sim/userstream/drop", {"count": 1})
        ex.create_order(BTC, "market", "buy", 0.01)
        ex.create_order(BTC, "market", "buy", 0.01)
        kinds = [m["o"]["x"] for m in events(ws, "ORDER_TRADE_UPDATE", 3)]
    assert kinds == ["NEW", "NEW", "TRADE"]
    assert len(sim.admin("/sim/state")["fills"]) == 2


@pytest.fixture()
def clocked() -> Iterator[tuple[SimServer, TestClock]]:
    clock = TestClock(datetime(2026, 3, 1, tzinfo=UTC))
    with SimServer(clock=clock, paused=True, symbols=("BTCUSDT",)) as server:
        yield server, clock


def test_listen_key_expires_after_60_minutes_without_keepalive(
    clocked: tuple[SimServer, TestClock],
) -> None:
    sim, _clock = clocked
    raw = Raw(sim)
    key = listen_key(raw)
    with connect(f"{sim.ws_url}/stream?streams={key}") as ws:
        sim.admin("/sim/clock", {"advanceMs": 59 * 60_000})
        assert raw.send("PUT", "/fapi/v1/listenKey", signed=False).status_code == 200
        sim.admin("/sim/clock", {"advanceMs": 59 * 60_000})  # kept alive: 118 min in total
        sim.admin("/sim/clock", {"advanceMs": 60_001})
        msg = recv(ws)
        assert msg["stream"] == key
        assert msg["data"]["e"] == "listenKeyExpired" and msg["data"]["listenKey"] == key
        with pytest.raises(ConnectionClosed):
            recv(ws)
    resp = raw.send("PUT", "/fapi/v1/listenKey", signed=False)
    assert resp.json()["code"] == -1125
    assert raw.send("POST", "/fapi/v1/listenKey", signed=False).json()["listenKey"] != key


def test_admin_expire_and_ws_drop(sim: SimServer, raw: Raw) -> None:
    key = listen_key(raw)
    with (
        connect(f"{sim.ws_url}/ws/{key}") as user,
        connect(f"{sim.ws_url}/ws/btcusdt@bookTicker") as market,
    ):
        sim.admin("/sim/listenkeys/expire", {})
        assert recv(user)["e"] == "listenKeyExpired"
        assert sim.admin("/sim/ws/drop", {})["dropped"] >= 1
        with pytest.raises(ConnectionClosed):
            for _ in range(100):
                recv(market)


def test_depth_diffs_are_continuous_and_gap_fault_breaks_them(sim: SimServer, ex: Any) -> None:
    with connect(f"{sim.ws_url}/stream?streams=btcusdt@depth@100ms/btcusdt@depth20") as ws:
        snapshot = ex.fapiPublicGetDepth({"symbol": "BTCUSDT", "limit": 20})
        book = {
            "b": {p: q for p, q in snapshot["bids"]},
            "a": {p: q for p, q in snapshot["asks"]},
        }
        last_u = int(snapshot["lastUpdateId"])
        for i in range(1, 6):
            sim.admin("/sim/price", {"symbol": "BTCUSDT", "price": str(60000 + i * 0.7)})
        ex.create_order(BTC, "market", "buy", 1)  # taking liquidity is a book change too
        diffs, partial = [], None
        while len(diffs) < 6:
            msg = recv(ws)
            if msg["stream"] == "btcusdt@depth@100ms":
                diffs.append(msg["data"])
            else:
                partial = msg["data"]
        assert diffs[0]["U"] <= last_u + 1 <= diffs[0]["u"] and diffs[0]["pu"] == last_u
        for prev, cur in itertools.pairwise(diffs):
            assert cur["pu"] == prev["u"] and cur["U"] == prev["u"] + 1
        for d in diffs:
            for side in ("b", "a"):
                for p, q in d[side]:
                    book[side].pop(p, None) if float(q) == 0 else book[side].__setitem__(p, q)
        assert partial is not None and len(partial["b"]) == 20
        final = ex.fapiPublicGetDepth({"symbol": "BTCUSDT", "limit": 20})
        assert sorted(book["b"].items(), reverse=True)[:20] == [tuple(x) for x in final["bids"]]
        sim.admin("/sim/depth/gap", {"symbol": "BTCUSDT"})
        sim.admin("/sim/price", {"symbol": "BTCUSDT", "price": "60100"})
        gap = recv_until(ws, lambda m: m["stream"] == "btcusdt@depth@100ms")["data"]
        assert gap["pu"] != diffs[-1]["u"]


def test_subscribe_unsubscribe_list_on_open_connection(sim: SimServer) -> None:
    with connect(f"{sim.ws_url}/ws") as ws:
        ws.send(json.dumps({"method": "SUBSCRIBE", "params": ["btcusdt@markPrice@1s",
                                                              "btcusdt@aggTrade"], "id": 1}))  # fmt: skip
        assert recv(ws) == {"result": None, "id": 1}
        ws.send(json.dumps({"method": "LIST_SUBSCRIPTIONS", "id": 2}))
        assert recv(ws) == {"result": ["btcusdt@aggTrade", "btcusdt@markPrice@1s"], "id": 2}
        sim.admin("/sim/price", {"symbol": "BTCUSDT", "price": "61234.5"})
        mark = recv_until(ws, lambda m: m.get("e") == "markPriceUpdate")
        assert mark["p"] == "61234.5" and mark["s"] == "BTCUSDT"
        ws.send(json.dumps({"method": "UNSUBSCRIBE", "params": ["btcusdt@markPrice@1s"], "id": 3}))
        recv_until(ws, lambda m: m.get("id") == 3)
        ws.send(json.dumps({"method": "SUBSCRIBE", "params": ["bogus"], "id": 4}))
        assert recv_until(ws, lambda m: m.get("id") == 4)["error"]["code"] == 2
        ws.send("not json")
        assert "error" in recv_until(ws, lambda m: "error" in m)


def test_agg_trade_and_book_ticker_raw_streams(sim: SimServer, ex: Any) -> None:
    with connect(f"{sim.ws_url}/ws/btcusdt@aggTrade/btcusdt@bookTicker") as ws:
        ex.create_order(BTC, "market", "sell", 0.01)
        agg = recv_until(ws, lambda m: m.get("e") == "aggTrade")
        assert agg["s"] == "BTCUSDT" and agg["q"] == "0.010" and agg["m"] is True
        ticker = recv_until(ws, lambda m: m.get("e") == "bookTicker")
        assert float(ticker["b"]) < float(ticker["a"])


def test_private_ws_with_unknown_key_is_refused(sim: SimServer) -> None:
    with pytest.raises(Exception, match="400"):
        connect(f"{sim.ws_url}/private/ws?listenKey=nope").close()


def test_walk_moves_prices_deterministically() -> None:
    paths = []
    for _ in range(2):
        with SimServer(seed=42, symbols=("BTCUSDT",), paused=True) as sim:
            market = sim.sim.state.markets["BTCUSDT"] if sim.sim else None
            assert market is not None
            paths.append(sim.call(lambda m=market: [m.walk_step(1.0) and str(m.mid)
                                                    for _ in range(50)]))  # fmt: skip
    assert paths[0] == paths[1] and len(set(paths[0])) > 5


def test_firehose_delivers(sim: SimServer) -> None:
    with connect(f"{sim.ws_url}/stream?streams=btcusdt@bookTicker/ethusdt@bookTicker") as ws:
        sim.admin("/sim/firehose", {"rate": 2000, "symbols": ["BTCUSDT", "ETHUSDT"]})
        try:
            got = [recv(ws) for _ in range(200)]
        finally:
            sim.admin("/sim/firehose", {"rate": 0})
    assert {m["stream"] for m in got} == {"btcusdt@bookTicker", "ethusdt@bookTicker"}


def test_taking_the_whole_top_level_moves_the_book_ticker(sim: SimServer, ex: Any) -> None:
    """A market order that takes the best bid whole: its response is normal and the next
    bookTicker quotes the next level (the ticker used to read the emptied top level, raise,
    and turn the order's response into a 500 after the fill)."""
    with connect(f"{sim.ws_url}/ws/btcusdt@bookTicker") as ws:
        top_price, top_qty = ex.fetch_order_book(BTC, 5)["bids"][0][:2]
        order = ex.create_order(BTC, "market", "sell", top_qty)
        assert order["status"] == "closed" and order["filled"] == top_qty
        ticker = recv_until(ws, lambda m: m.get("e") == "bookTicker")
        assert float(ticker["b"]) < top_price < float(ticker["a"])
