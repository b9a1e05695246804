"""Exchange messages are outside input: one bad value must neither stop the streamer nor be
taken as a price.

- A message whose event time ``E`` is a string was accepted (``int()`` reads a string) and the
  raw value kept in ``StreamHealth.event_ms``; the next status tick computed ``now - event_ms``,
  raised TypeError, and the ticker task's death stopped every stream.
- A mark of 0 was stored as a fresh price and handed to the risk monitor (it zeroes every
  notional and maintenance margin: every holder's margin ratio read 0, NORMAL).
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from decimal import Decimal

import orjson
import redis
import redis.asyncio as aioredis

from pms.clock import SystemClock, TestClock
from pms.config import Settings
from pms.streaming.cache import CacheWriter
from pms.streaming.market import MarketCache, MarketStream
from pms.streaming.status import StatusBoard
from tests.streaming.conftest import StreamerThread
from tests.streaming.test_price_freshness import (
    SYM,
    _Cache,
    _deliver,
    _Exchange,
    _mark,
    _service,
    _stream,
)
from tests.support import wait_for


def _mark_frame(event_time: object) -> bytes:
    return orjson.dumps(
        {
            "stream": "btcusdt@markPrice@1s",
            "data": {
                "e": "markPriceUpdate",
                "E": event_time,
                "s": "BTCUSDT",
                "p": "60000.0",
                "i": "60000.0",
                "P": "60000.0",
                "r": "0.0001",
                "T": 1767254400000,
            },
        }
    )


def test_a_string_event_time_breaks_the_status_board(settings: Settings) -> None:
    async def main() -> None:
        client = aioredis.Redis.from_url(settings.redis_url)
        try:
            board = StatusBoard(client, SystemClock(), prefix=settings.redis_prefix + "audit-E:")
            cache = CacheWriter(client)
            market = MarketCache(cache, settings.redis_prefix + "audit-E:")
            health = board.stream("market")
            stream = MarketStream("market", "ws://unused", market, None, health)  # type: ignore[arg-type]
            await stream.set_symbols({"BTC/USDT:USDT"})
            health.connected = True
            health.seen(SystemClock().ms())
            # The frame is accepted: the mark is taken...
            stream.on_message(_mark_frame("1767225600000"), 1)
            assert str(market.prices["BTCUSDT"].mark) == "60000.0"
            # ...and the next status tick must still work.
            await board.tick()
        finally:
            await client.aclose()

    asyncio.run(main())


def test_one_user_event_with_a_string_time_stops_the_whole_streamer(
    make_streamer: Callable[..., StreamerThread],
) -> None:
    st = make_streamer()
    wait_for(
        lambda: (
            st.streamer.board is not None
            and st.streamer.board.streams.get("user") is not None
            and st.streamer.board.streams["user"].connected
        ),
        10,
        message="user stream connected",
    )
    user = st.streamer.user
    assert user is not None
    # An event kind the engine ignores (e.g. TRADE_LITE / ACCOUNT_CONFIG_UPDATE) whose E is
    # a string: nothing parses it, yet the health keeps it.
    frame = orjson.dumps({"e": "ACCOUNT_CONFIG_UPDATE", "E": "1767225600000", "T": 1})
    settings = st.streamer.settings
    client = redis.Redis.from_url(settings.redis_url)
    status = settings.key("pms:stream:status")
    try:
        st.call(lambda: user.on_message(frame, 1))
        for _ in range(3):  # three status ticks after the frame, each one written
            client.delete(status)
            wait_for(lambda: client.exists(status), 5, message="a status tick")
    finally:
        client.close()
    assert st.thread is not None
    alive = st.thread.is_alive()
    error = st.error
    st.error = None  # let the fixture's stop() finish cleanly
    assert alive and error is None, f"streamer died: {error!r}"


def test_a_zero_mark_is_neither_stored_nor_fed_to_risk() -> None:
    clock = TestClock()
    cache = _Cache()
    fed: list[tuple[str, Decimal]] = []
    market = MarketCache(cache, "", on_mark=lambda s, m: fed.append((s, m)))  # type: ignore[arg-type]
    stream = _stream(market, "market")

    _deliver(stream, clock, _mark("60000", clock.ms()))
    clock.advance(ms=1000)
    for bad in ("0.00000000", "-1", "NaN"):
        _deliver(stream, clock, _mark(bad, clock.ms()))  # dropped, no reconnect

    view = _service(cache.store, clock, _Exchange("60000")).get(SYM, fresh=True)
    assert view.mark > 0, f"served mark {view.mark} ({view.source})"
    assert all(m > 0 for _, m in fed), f"risk monitor fed {fed}"
