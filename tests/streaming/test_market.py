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
    assert set(price) == {"mark", "index", "bid", "bidQty", "ask", "askQty", "last", "ts", "source"}


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
