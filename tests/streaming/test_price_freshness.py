"""Freshness of ``pms:price:{symbol}`` from the streamer's handlers to what pre-trade checks
read (``PriceService``): no network, no Redis.

On Binance the price state is fed by two connections (``/public``: bookTicker + depth;
``/market``: markPrice + aggTrade), and either may stop while the other flows. So the record
carries the mark's and the bid/ask's own receive times (``markTs``, ``quoteTs``; ``ts`` is the
mark's), the price service judges each part by its own time, and the bid/ask are cleared when
the connection that carries them closes.
"""

from __future__ import annotations

import asyncio
from decimal import Decimal
from typing import Any

import orjson

from pms.clock import TestClock
from pms.marketdata.prices import PriceService, parse_price
from pms.streaming.market import KINDS, MarketCache, MarketStream
from pms.streaming.status import StreamHealth

SYM = "BTC/USDT:USDT"
KEY = f"pms:price:{SYM}"


class _Cache:
    """Stands in for CacheWriter: keeps the last rendered value per key, as Redis would."""

    def __init__(self) -> None:
        self.store: dict[str, bytes | None] = {}

    def touch(self, key: str, value: Any, recv_ns: int = 0) -> None:
        self.store[key] = None if value is None else value.render()


class _Redis:
    def __init__(self, store: dict[str, bytes | None]) -> None:
        self.store = store
        self.gets = 0

    def get(self, key: str) -> bytes | None:
        self.gets += 1
        return self.store.get(key)


class _Exchange:
    def __init__(self, mark: str = "50000") -> None:
        self.mark = Decimal(mark)
        self.calls = 0

    def fetch_mark_price(self, symbol: str) -> Decimal:
        self.calls += 1
        return self.mark


def _stream(market: MarketCache, name: str, kinds: tuple[str, ...] = KINDS) -> MarketStream:
    stream = MarketStream(name, f"ws://x/{name}", market, None, StreamHealth(name), kinds)  # type: ignore[arg-type]
    asyncio.run(stream.set_symbols([SYM]))
    return stream


def _split() -> tuple[_Cache, MarketStream, MarketStream]:
    """The Binance layout (streamer/app.py ``market_endpoints``): one price state, two sockets."""
    cache = _Cache()
    market = MarketCache(cache, "")  # type: ignore[arg-type]
    public = _stream(market, "public", ("bookTicker", "depth@100ms"))
    marks = _stream(market, "market", ("markPrice@1s", "aggTrade"))
    return cache, public, marks


def _deliver(stream: MarketStream, clock: TestClock, data: dict[str, Any]) -> None:
    # What reconnect._pump does with every frame: health.seen(now), then on_message.
    stream.health.seen(clock.ms())
    stream.on_message(orjson.dumps({"stream": "x", "data": data}), 1)


def _mark(price: str, event_ms: int) -> dict[str, Any]:
    return {
        "e": "markPriceUpdate",
        "E": event_ms,
        "s": "BTCUSDT",
        "p": price,
        "i": price,
        "P": price,
        "r": "0.0001",
        "T": event_ms,
    }


def _ticker(bid: str, ask: str, event_ms: int, update_id: int) -> dict[str, Any]:
    return {
        "e": "bookTicker",
        "u": update_id,
        "E": event_ms,
        "T": event_ms,
        "s": "BTCUSDT",
        "b": bid,
        "B": "1",
        "a": ask,
        "A": "1",
    }


def _service(store: dict[str, bytes | None], clock: TestClock, exchange: _Exchange) -> PriceService:
    return PriceService(_Redis(store), exchange, clock)  # type: ignore[arg-type]


def test_a_frozen_mark_is_not_kept_fresh_by_a_flowing_book_ticker() -> None:
    """/market goes down while /public keeps sending bookTicker for 60 s: the mark's own time
    (``markTs``, and ``ts``) stays at its receipt, so the price service sees a 60 s old mark
    and falls back to REST instead of serving it as fresh."""
    clock = TestClock()
    cache, public, marks = _split()
    t0 = clock.ms()
    _deliver(marks, clock, _mark("60000", t0))
    _deliver(public, clock, _ticker("59999.9", "60000.1", t0, 1))
    asyncio.run(marks.on_close("closed"))
    for i in range(60):
        clock.advance(1)
        _deliver(public, clock, _ticker("49999.9", "50000.1", clock.ms(), 2 + i))

    record = orjson.loads(cache.store[KEY] or b"{}")
    assert record["markTs"] == record["ts"] == t0
    assert record["quoteTs"] == clock.ms()

    exchange = _Exchange("50000")
    view = _service(cache.store, clock, exchange).get(SYM, fresh=True)
    assert (view.mark, view.source, exchange.calls) == (Decimal("50000"), "rest", 1)


def test_a_bid_ask_older_than_the_max_age_is_not_served() -> None:
    """A fresh mark with a 30 s old bid/ask (bookTicker silent, its socket still up): the mark
    is used, the bid/ask are treated as absent so checks fall back to the mark."""
    clock = TestClock()
    now = clock.ms()
    raw = orjson.dumps(
        {
            "mark": "50000",
            "bid": "59999.9",
            "ask": "60000.1",
            "ts": now - 200,
            "markTs": now - 200,
            "quoteTs": now - 30_000,
            "source": "stream",
        }
    )
    exchange = _Exchange()
    view = _service({KEY: raw}, clock, exchange).get(SYM)
    assert (view.mark, view.bid, view.ask, view.source) == (Decimal("50000"), None, None, "redis")
    assert exchange.calls == 0


def test_a_fresh_bid_ask_is_served_with_the_mark() -> None:
    clock = TestClock()
    cache, public, marks = _split()
    _deliver(marks, clock, _mark("60000", clock.ms()))
    clock.advance(3)
    _deliver(public, clock, _ticker("59999.9", "60000.1", clock.ms(), 1))
    clock.advance(1)
    view = _service(cache.store, clock, _Exchange()).get(SYM)
    assert (view.mark, view.bid, view.ask) == (
        Decimal("60000"),
        Decimal("59999.9"),
        Decimal("60000.1"),
    )
    assert view.ts == clock.ms() - 4000 and view.quote_ts == clock.ms() - 1000


def test_the_public_disconnect_clears_the_bid_ask_at_once() -> None:
    """/public drops: its symbols' bid/ask are removed from the record immediately, and the
    marks that keep arriving on /market do not bring them back - not even within the max age,
    where their time alone would let them pass."""
    clock = TestClock()
    cache, public, marks = _split()
    t0 = clock.ms()
    _deliver(public, clock, _ticker("59999.9", "60000.1", t0, 1))
    _deliver(marks, clock, _mark("60000", t0))

    asyncio.run(public.on_close("closed"))
    record = orjson.loads(cache.store[KEY] or b"{}")
    assert (record["bid"], record["ask"], record["quoteTs"]) == (None, None, None)
    assert record["mark"] == "60000"

    clock.advance(1)
    _deliver(marks, clock, _mark("59000", clock.ms()))
    view = _service(cache.store, clock, _Exchange()).get(SYM, fresh=True)
    assert (view.mark, view.bid, view.ask) == (Decimal("59000"), None, None)


def test_a_mark_after_a_reconnect_does_not_republish_the_old_bid_ask() -> None:
    """One combined connection drops and comes back; the first markPrice (within 1 s, before
    any bookTicker on a quiet book) must not publish the bid/ask from before the drop."""
    clock = TestClock()
    cache = _Cache()
    stream = _stream(MarketCache(cache, ""), "market")  # type: ignore[arg-type]
    t0 = clock.ms()
    _deliver(stream, clock, _ticker("59999.9", "60000.1", t0, 1))
    _deliver(stream, clock, _mark("60000", t0))
    asyncio.run(stream.on_close("closed: dropped"))
    clock.advance(0.5)
    _deliver(stream, clock, _mark("52000", clock.ms()))

    view = _service(cache.store, clock, _Exchange("52000")).get(SYM, fresh=True)
    assert (view.mark, view.bid, view.ask, view.source) == (Decimal("52000"), None, None, "redis")

    _deliver(stream, clock, _ticker("51999.9", "52000.1", clock.ms(), 2))
    view = _service(cache.store, clock, _Exchange("52000")).get(SYM, fresh=True)
    assert (view.bid, view.ask) == (Decimal("51999.9"), Decimal("52000.1"))


def test_a_mark_only_connection_closing_leaves_the_bid_ask_alone() -> None:
    """/market dropping says nothing about the quote /public still maintains."""
    clock = TestClock()
    cache, public, marks = _split()
    _deliver(public, clock, _ticker("59999.9", "60000.1", clock.ms(), 1))
    _deliver(marks, clock, _mark("60000", clock.ms()))
    asyncio.run(marks.on_close("closed"))
    record = orjson.loads(cache.store[KEY] or b"{}")
    assert (record["bid"], record["ask"]) == ("59999.9", "60000.1")


def test_a_record_in_the_older_format_is_still_read() -> None:
    """Writers of the format without ``markTs``/``quoteTs`` (bench, tests): ``ts`` is used for
    both parts."""
    clock = TestClock()
    raw = orjson.dumps(
        {"mark": "60000", "bid": "59999", "ask": "60001", "ts": clock.ms(), "source": "stream"}
    )
    view = parse_price(SYM, raw)
    assert (view.ts, view.quote_ts) == (clock.ms(), clock.ms())
    clock.advance(6)
    exchange = _Exchange()
    assert _service({KEY: raw}, clock, exchange).get(SYM).source == "rest"


def test_the_source_says_where_the_read_found_the_price() -> None:
    """``PriceView.source`` is ``redis``, ``memory`` (the in-process copy) or ``rest``."""
    clock = TestClock()
    raw = orjson.dumps(
        {"mark": "60000", "bid": "59999", "ask": "60001", "ts": clock.ms(), "source": "stream"}
    )
    prices = _service({KEY: raw}, clock, _Exchange())
    first = prices.get(SYM)
    second = prices.get(SYM)
    assert (first.source, second.source) == ("redis", "memory")
    clock.advance(6)
    assert prices.get(SYM).source == "rest"
    assert prices.get(SYM).source == "memory"


def test_the_in_process_copy_lasts_memory_ms_from_its_read_not_from_the_mark() -> None:
    """The mark is up to 1 s old by nature (markPrice@1s): the 100 ms in-process copy is timed
    from when it was read, or it would never be used."""
    clock = TestClock()
    raw = orjson.dumps(
        {
            "mark": "60000",
            "bid": None,
            "ask": None,
            "ts": clock.ms() - 900,
            "markTs": clock.ms() - 900,
            "quoteTs": None,
            "source": "stream",
        }
    )
    redis_ = _Redis({KEY: raw})
    prices = PriceService(redis_, _Exchange(), clock)  # type: ignore[arg-type]
    assert prices.get(SYM).source == "redis"
    clock.advance(ms=50)
    assert prices.get(SYM).source == "memory"
    assert redis_.gets == 1
    clock.advance(ms=60)
    assert prices.get(SYM).source == "redis"
