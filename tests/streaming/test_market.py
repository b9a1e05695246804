"""Market data against the simulator: prices, books, gaps, live (un)subscription."""

from __future__ import annotations

import time
from collections.abc import Callable
from decimal import Decimal
from typing import Any

import orjson
import redis

from pms.config import Settings
from pms.sim.runner import SimServer
from tests.streaming.conftest import StreamerThread
from tests.support import wait_for

BTC = "BTC/USDT:USDT"


def cached(client: redis.Redis, settings: Settings, kind: str, symbol: str) -> Any:
    raw = client.get(settings.key(f"pms:{kind}:{symbol}"))
    return None if raw is None else orjson.loads(raw)


def sim_book(sim: SimServer, symbol: str = "BTCUSDT") -> dict[str, Any]:
    import json
    import urllib.request

    with urllib.request.urlopen(f"{sim.url}/fapi/v1/depth?symbol={symbol}&limit=20") as r:
        return json.loads(r.read())  # type: ignore[no-any-return]


def book_synced(client: redis.Redis, settings: Settings, sim: SimServer) -> bool:
    mine = cached(client, settings, "book", BTC)
    if mine is None:
        return False
    theirs = sim_book(sim)
    return (
        mine["lastUpdateId"] == theirs["lastUpdateId"]
        and [[Decimal(p), Decimal(q)] for p, q in mine["bids"]]
        == [[Decimal(p), Decimal(q)] for p, q in theirs["bids"]]
        and [[Decimal(p), Decimal(q)] for p, q in mine["asks"]]
        == [[Decimal(p), Decimal(q)] for p, q in theirs["asks"]]
    )


def test_admin_price_is_visible_in_redis_within_100ms(
    sim: SimServer,
    sim_settings: Settings,
    redis_client: redis.Redis,
    make_streamer: Callable[..., StreamerThread],
) -> None:
    redis_client.delete(sim_settings.key(f"pms:price:{BTC}"))  # not a previous test's value
    make_streamer()
    wait_for(lambda: cached(redis_client, sim_settings, "price", BTC), 5, message="first price")

    sim.admin("/sim/price", {"symbol": "BTCUSDT", "price": "61234.5"})
    set_at = time.monotonic()
    wait_for(
        lambda: (cached(redis_client, sim_settings, "price", BTC) or {}).get("mark") == "61234.5",
        1.0,
        interval=0.002,
        message="mark 61234.5",
    )
    elapsed = time.monotonic() - set_at

    price = cached(redis_client, sim_settings, "price", BTC)
    assert elapsed < 0.1, f"price visible after {elapsed * 1000:.1f} ms"
    assert price["source"] == "stream"
    assert Decimal(price["bid"]) < Decimal(price["ask"])
    assert Decimal(price["bid"]) <= Decimal("61234.5") <= Decimal(price["ask"])
    assert set(price) == {
        "mark",
        "index",
        "bid",
        "bidQty",
        "ask",
        "askQty",
        "last",
        "ts",
        "markTs",
        "quoteTs",
        "source",
    }
    assert price["ts"] == price["markTs"] and price["quoteTs"] is not None


def test_book_levels_match_the_simulator(
    sim: SimServer,
    sim_settings: Settings,
    redis_client: redis.Redis,
    make_streamer: Callable[..., StreamerThread],
) -> None:
    make_streamer()
    wait_for(lambda: book_synced(redis_client, sim_settings, sim), 5, message="book synced")

    for price in ("60010", "59990.5", "60003.2"):
        sim.admin("/sim/price", {"symbol": "BTCUSDT", "price": price})
        wait_for(lambda: book_synced(redis_client, sim_settings, sim), 2, message=price)

    book = cached(redis_client, sim_settings, "book", BTC)
    assert len(book["bids"]) == 20 and len(book["asks"]) == 20
    assert Decimal(book["bids"][0][0]) < Decimal(book["asks"][0][0])


class BookWatcher:
    """Polls ``pms:book`` on a thread and records every crossed or out-of-order book."""

    def __init__(self, client: redis.Redis, key: str) -> None:
        import threading

        self.client = client
        self.key = key
        self.bad: list[str] = []
        self.seen = 0
        self.absent = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        last_id = 0
        while not self._stop.is_set():
            raw = self.client.get(self.key)
            if raw is None:
                self.absent += 1
            else:
                book = orjson.loads(raw)
                self.seen += 1
                if Decimal(book["bids"][0][0]) >= Decimal(book["asks"][0][0]):
                    self.bad.append(f"crossed at {book['lastUpdateId']}")
                if book["lastUpdateId"] < last_id:
                    self.bad.append(f"went back from {last_id} to {book['lastUpdateId']}")
                last_id = book["lastUpdateId"]
            time.sleep(0.001)

    def __enter__(self) -> BookWatcher:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(5)


def test_depth_gap_resyncs_and_never_publishes_a_broken_book(
    sim: SimServer,
    sim_settings: Settings,
    redis_client: redis.Redis,
    make_streamer: Callable[..., StreamerThread],
) -> None:
    st = make_streamer()
    wait_for(lambda: book_synced(redis_client, sim_settings, sim), 5, message="book synced")
    book = st.streamer.market_streams[0].books["BTCUSDT"]
    resyncs = book.resyncs

    with BookWatcher(redis_client, sim_settings.key(f"pms:book:{BTC}")) as watcher:
        sim.admin("/sim/depth/gap", {"symbol": "BTCUSDT"})
        for price in ("60020", "60040.5", "59990"):  # the first diff after the gap breaks pu
            sim.admin("/sim/price", {"symbol": "BTCUSDT", "price": price})
        wait_for(lambda: book.resyncs > resyncs, 2, message="gap detected")
        wait_for(lambda: book_synced(redis_client, sim_settings, sim), 3, message="resynced")
        time.sleep(0.05)

    assert watcher.bad == []
    assert watcher.seen > 0
    assert st.streamer.board is not None
    assert st.streamer.board.stream("market").reconnects == 0  # a resync, not a reconnect


def test_symbol_in_use_is_subscribed_live_and_dropped_when_unused(
    sim: SimServer,
    app: Any,
    sim_settings: Settings,
    redis_client: redis.Redis,
    make_streamer: Callable[..., StreamerThread],
) -> None:
    from pms.commands import schemas as cmd
    from tests.streaming.helpers import resting_buy

    sol = "SOL/USDT:USDT"
    sim.admin("/sim/price", {"symbol": "SOLUSDT", "price": "150"})
    st = make_streamer()
    wait_for(lambda: cached(redis_client, sim_settings, "price", BTC), 5, message="BTC price")
    assert cached(redis_client, sim_settings, "price", sol) is None

    coid = resting_buy(app, price="145", qty="1", symbol=sol)  # an open order on SOL

    wait_for(lambda: "SOLUSDT" in st.streamer.market_streams[0].symbols, 3, message="subscribed")
    sim.admin("/sim/price", {"symbol": "SOLUSDT", "price": "151.25"})
    wait_for(
        lambda: (cached(redis_client, sim_settings, "price", sol) or {}).get("mark") == "151.25",
        3,
        message="SOL price",
    )
    wait_for(lambda: cached(redis_client, sim_settings, "book", sol), 3, message="SOL book")

    with app.sessions() as s:
        from sqlalchemy import select

        from pms.db.models import Order

        order = s.execute(select(Order).where(Order.client_order_id == coid)).scalar_one()
        cancel = cmd.CancelOrder(
            requestId=f"c-{coid}",
            userId="x",
            role="admin",
            subAccountId=order.sub_account_id,
            clientOrderId=coid,
        )
    app.orders.cancel(cancel)

    wait_for(lambda: "SOLUSDT" not in st.streamer.market_streams[0].symbols, 3, message="unsub")
    wait_for(lambda: cached(redis_client, sim_settings, "price", sol) is None, 2, message="gone")
    assert cached(redis_client, sim_settings, "book", sol) is None
    assert st.streamer.board is not None
    assert st.streamer.board.stream("market").reconnects == 0  # no reconnect storm


def test_status_hash_and_events(
    sim_settings: Settings,
    redis_client: redis.Redis,
    make_streamer: Callable[..., StreamerThread],
) -> None:
    from pms.clock import SystemClock
    from pms.messaging.events import EventPublisher

    events = EventPublisher(redis_client, SystemClock(), prefix=sim_settings.redis_prefix)
    last = events.read("0", count=100_000)
    since = last[-1][0] if last else "0"
    make_streamer()

    def status() -> dict[str, Any]:
        raw = redis_client.hgetall(sim_settings.key("pms:stream:status"))
        return {k.decode(): orjson.loads(v) for k, v in raw.items()}

    wait_for(lambda: status().get("user", {}).get("connected"), 3, message="status")
    wait_for(lambda: (status()["market"].get("lastMessageTs") or 0) > 0, 3, message="ts")
    market = status()["market"]
    assert set(market) >= {"connected", "lastMessageTs", "reconnects", "messagesPerSec", "lagMs"}
    kinds = [
        (e["type"], e["data"]["stream"], e["data"]["connected"])
        for _, e in events.read(since, count=1000)
        if e["type"] == "stream_status"
    ]
    assert ("stream_status", "market", True) in kinds and ("stream_status", "user", True) in kinds
