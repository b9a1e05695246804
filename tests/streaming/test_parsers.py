"""Recorded frames (``frames.jsonl``, captured from the simulator) replayed through the
parsers and the stream handlers: no network."""

from __future__ import annotations

import json
from decimal import Decimal
from pathlib import Path
from typing import Any

import orjson
import pytest

from pms.domain.enums import Side
from pms.streaming.cache import CacheWriter
from pms.streaming.market import (
    MarketCache,
    MarketStream,
    parse_agg_trade,
    parse_book_ticker,
    parse_depth_update,
    parse_mark_price,
)
from pms.streaming.reconnect import Reconnect
from pms.streaming.rest import parse_depth_snapshot
from pms.streaming.status import StreamHealth
from pms.streaming.userdata import (
    AccountUpdate,
    OrderUpdate,
    UserStream,
    parse_account_update,
    parse_order_trade_update,
)

FRAMES = [
    json.loads(line) for line in (Path(__file__).parent / "frames.jsonl").read_text().splitlines()
]


def events(conn: str, kind: str) -> list[dict[str, Any]]:
    out = []
    for frame in FRAMES:
        if frame["conn"] != conn:
            continue
        msg = orjson.loads(frame["raw"])
        data = msg.get("data", msg)
        if data.get("e") == kind:
            out.append(data)
    return out


def test_mark_price() -> None:
    m = parse_mark_price(events("market", "markPriceUpdate")[0])
    assert (m.symbol, m.mark, m.index_price, m.funding_rate) == (
        "BTCUSDT",
        Decimal("60000"),
        Decimal("60000"),
        Decimal("0.0001"),
    )


def test_book_ticker() -> None:
    t = parse_book_ticker(events("market", "bookTicker")[0])
    assert t.symbol == "BTCUSDT" and t.bid < t.ask and t.bid_qty > 0 and t.ask_qty > 0
    assert str(t.bid) == events("market", "bookTicker")[0]["b"]  # exact, not float


def test_depth_update_and_snapshot() -> None:
    d = parse_depth_update(events("market", "depthUpdate")[1])
    assert (d.first_id, d.last_id, d.prev_id) == (1000101, 1000101, 1000100)
    assert d.bids == ((Decimal("59979.9"), Decimal("0.328")),) and d.asks == ()
    snap = parse_depth_snapshot(
        {"lastUpdateId": 7, "E": 5, "bids": [["1.5", "2"]], "asks": [["1.6", "0.1"]]}
    )
    assert snap.last_update_id == 7 and snap.bids == ((Decimal("1.5"), Decimal("2")),)


def test_agg_trade() -> None:
    a = parse_agg_trade(events("market", "aggTrade")[0])
    assert a.symbol == "BTCUSDT" and a.price > 0 and a.qty > 0


def test_order_trade_update_new_has_no_trade() -> None:
    u = parse_order_trade_update(events("user", "ORDER_TRADE_UPDATE")[0])
    assert (u.symbol, u.client_order_id, u.execution_type, u.status) == (
        "BTC/USDT:USDT",
        "pms-17",
        "NEW",
        "NEW",
    )
    assert u.trade is None and u.qty == Decimal("0.004") and u.price == Decimal("59990.0")


def test_order_trade_update_trade_is_a_trade_report() -> None:
    trades = [
        parse_order_trade_update(e)
        for e in events("user", "ORDER_TRADE_UPDATE")
        if e["o"]["x"] == "TRADE"
    ]
    maker = next(t for t in trades if t.client_order_id == "pms-17")
    taker = next(t for t in trades if t.client_order_id == "pms-19")
    assert maker.trade is not None and taker.trade is not None
    assert maker.trade.is_maker and not taker.trade.is_maker
    assert maker.trade.side is Side.BUY and taker.trade.side is Side.SELL
    raw = next(
        e["o"] for e in events("user", "ORDER_TRADE_UPDATE")
        if e["o"]["c"] == "pms-17" and e["o"]["x"] == "TRADE"
    )  # fmt: skip
    assert maker.trade.qty == Decimal("0.004") and maker.trade.price == Decimal("59990.0")
    assert maker.trade.trade_id == str(raw["t"]) and maker.trade.exchange_order_id == str(raw["i"])
    assert maker.trade.fee == Decimal(raw["n"]) and maker.trade.fee_asset == "USDT"
    assert maker.trade.fee == Decimal("0.004") * Decimal("59990.0") * Decimal("0.0002")
    assert maker.trade.order_status == "FILLED"
    assert maker.trade.order_filled == Decimal(raw["z"])
    assert maker.trade.traded_at.tzinfo is not None


def test_account_update() -> None:
    a = parse_account_update(events("user", "ACCOUNT_UPDATE")[0])
    assert a.reason == "ORDER" and "USDT" in a.balances
    assert a.positions[0].symbol == "BTC/USDT:USDT" and a.positions[0].amount == Decimal("0.004")


def _quarterly(event: dict[str, Any]) -> dict[str, Any]:
    """``event`` as if it were about BTCUSDT_260626, a quarterly the engine does not trade."""
    return orjson.loads(orjson.dumps(event).replace(b'"BTCUSDT"', b'"BTCUSDT_260626"'))


def test_account_update_leaves_out_contracts_the_engine_does_not_trade() -> None:
    event = events("user", "ACCOUNT_UPDATE")[0]
    both = orjson.loads(orjson.dumps(event))
    both["a"]["P"] = [*_quarterly(event)["a"]["P"], *event["a"]["P"]]
    a = parse_account_update(both)
    assert [p.symbol for p in a.positions] == ["BTC/USDT:USDT"]


class Recorder:
    def __init__(self) -> None:
        self.orders: list[OrderUpdate] = []
        self.accounts: list[AccountUpdate] = []

    def order_update(self, update: OrderUpdate) -> None:
        self.orders.append(update)

    def account_update(self, update: AccountUpdate) -> None:
        self.accounts.append(update)


def test_user_frames_replayed_through_the_stream() -> None:
    sink = Recorder()
    stream = UserStream("ws://unused", None, sink, StreamHealth("user"), clock=None)  # type: ignore[arg-type]
    with pytest.raises(Reconnect):
        for frame in FRAMES:
            if frame["conn"] == "user":
                stream.on_message(frame["raw"], 1)
    assert [u.execution_type for u in sink.orders] == [
        "NEW",
        "NEW",
        "TRADE",
        "NEW",
        "TRADE",
        "CANCELED",
    ]
    assert len(sink.accounts) == 2
    assert stream.listen_key is None  # listenKeyExpired: a new one is needed


def test_order_events_of_contracts_the_engine_does_not_trade_are_skipped() -> None:
    sink = Recorder()
    stream = UserStream("ws://unused", None, sink, StreamHealth("user"), clock=None)  # type: ignore[arg-type]
    for event in events("user", "ORDER_TRADE_UPDATE"):
        stream.on_message(orjson.dumps(_quarterly(event)), 1)  # a hand-placed quarterly order
    stream.on_message(orjson.dumps(events("user", "ORDER_TRADE_UPDATE")[0]), 2)
    assert [u.symbol for u in sink.orders] == ["BTC/USDT:USDT"]


async def _replay_market() -> tuple[MarketStream, CacheWriter]:
    cache = CacheWriter(None)  # type: ignore[arg-type]  # never flushed here
    market = MarketCache(cache, "p:")
    stream = MarketStream("market", "ws://unused", market, None, StreamHealth("market"))  # type: ignore[arg-type]
    await stream.set_symbols({"BTC/USDT:USDT"})
    for n, frame in enumerate(FRAMES):
        if frame["conn"] == "market":
            stream.on_message(frame["raw"], n + 1)
    return stream, cache


def test_market_frames_replayed_into_the_price_state() -> None:
    import asyncio

    stream, cache = asyncio.run(_replay_market())
    st = stream.market.prices["BTCUSDT"]
    last_ticker = events("market", "bookTicker")[-1]
    assert str(st.bid) == last_ticker["b"] and str(st.ask) == last_ticker["a"]
    assert str(st.mark) == events("market", "markPriceUpdate")[-1]["p"]
    assert str(st.last) == events("market", "aggTrade")[-1]["p"]
    price = orjson.loads(st.render())
    assert price["source"] == "stream" and price["mark"] == str(st.mark)
    assert cache.pending == 1  # coalesced: one key however many messages
    # Not connected, so no snapshot: the diffs wait in the buffer, nothing published.
    assert not stream.books["BTCUSDT"].live and len(stream.books["BTCUSDT"].buffer) == 2


def test_only_events_for_a_symbol_not_streamed_wake_the_subscription_refresh() -> None:
    from pms.streaming.subscriptions import SubscriptionManager

    manager = SubscriptionManager(("BTC/USDT:USDT",), None, [])  # type: ignore[arg-type]
    manager.current = {"BTC/USDT:USDT"}

    def event(symbol: str) -> bytes:
        return orjson.dumps({"v": 1, "type": "order_update", "data": {"symbol": symbol}})

    assert manager.wanted_now(event("BTC/USDT:USDT")) is False
    assert manager.wanted_now(event("SOL/USDT:USDT")) is True
    assert manager.wanted_now(b"not json") is True
    assert manager.wanted_now(orjson.dumps({"type": "order_update"})) is True


def test_a_symbol_added_while_connecting_is_subscribed_on_the_new_connection(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """set_symbols during open()'s connect finds no connection; open()'s URL was built
    before: on_open subscribes what the URL missed (found as a SOL price that never came)."""
    import asyncio

    import pms.streaming.market as market_mod

    sent: list[dict[str, object]] = []
    urls: list[str] = []

    class Conn:
        async def send(self, text: str) -> None:
            sent.append(orjson.loads(text))

    async def main() -> None:
        connecting = asyncio.Event()
        proceed = asyncio.Event()

        async def fake_connect(url: str, **_: object) -> Conn:
            urls.append(url)
            connecting.set()
            await proceed.wait()
            return Conn()

        monkeypatch.setattr(market_mod, "connect", fake_connect)
        cache = CacheWriter(None)  # type: ignore[arg-type]
        stream = MarketStream(
            "market", "ws://unused", MarketCache(cache, "p:"), None, StreamHealth("market"),  # type: ignore[arg-type]
            ("markPrice@1s",),
        )  # fmt: skip
        stream._resync = lambda *a: None  # type: ignore[method-assign]  # no REST here
        await stream.set_symbols({"BTC/USDT:USDT"})
        opening = asyncio.create_task(stream.open())
        await connecting.wait()
        await stream.set_symbols({"BTC/USDT:USDT", "SOL/USDT:USDT"})  # no connection yet
        proceed.set()
        conn = await opening
        await stream.on_open(conn, reconnect=False)  # type: ignore[arg-type]

    asyncio.run(main())
    assert "solusdt" not in urls[0]
    assert [(m["method"], m["params"]) for m in sent] == [("SUBSCRIBE", ["solusdt@markPrice@1s"])]
