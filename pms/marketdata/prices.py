"""Price resolution: in-process → Redis (``pms:price:{symbol}``, written by the streamer) →
exchange REST, with a staleness limit, the source recorded on every price.

Sample ``pms:price:BTC/USDT:USDT``::

    {"mark": "60012.5", "index": "60010.1", "bid": "60012.4", "bidQty": "1.2",
     "ask": "60012.6", "askQty": "0.8", "last": "60012.5", "ts": 1764000000000,
     "markTs": 1764000000000, "quoteTs": 1764000000180, "source": "stream"}

``markTs`` / ``quoteTs`` are the streamer's receive times (ms) of the mark and of the bid/ask:
they come over different connections on Binance and either may stop while the other flows.
``ts`` equals ``markTs``; a record without ``markTs``/``quoteTs`` (older writers) is read with
``ts`` for both. The mark is judged by its own age (older than ``max_age_ms`` → REST); a bid/ask
older than ``max_age_ms`` is dropped (``bid = ask = None``: checks fall back to the mark).
"""

from __future__ import annotations

import threading
from dataclasses import dataclass, replace
from decimal import Decimal
from typing import Any

import orjson
import redis

from pms.clock import Clock
from pms.domain.numbers import parse_decimal
from pms.errors import ExchangeUnavailable
from pms.exchange.model import Exchange

PRICE_KEY = "pms:price:"


@dataclass(frozen=True, slots=True)
class PriceView:
    symbol: str
    mark: Decimal
    bid: Decimal | None
    ask: Decimal | None
    ts: int  # when the mark was received (our clock, ms; REST: when it was fetched)
    # Where this read found the price: "memory" (the in-process copy), "redis" (the
    # streamer's record) or "rest" (the exchange).
    source: str
    quote_ts: int | None = None  # when the bid/ask was received (None: no bid/ask)


def price_key(prefix: str, symbol: str) -> str:
    return f"{prefix}{PRICE_KEY}{symbol}"


def parse_price(symbol: str, raw: bytes | str) -> PriceView:
    """A ``pms:price`` record as read from Redis (``source`` "redis"), ages not judged."""
    data: dict[str, Any] = orjson.loads(raw)
    bid = parse_decimal(data["bid"], "bid") if data.get("bid") else None
    ask = parse_decimal(data["ask"], "ask") if data.get("ask") else None
    quote_ts = data["quoteTs"] if "quoteTs" in data else data["ts"]
    return PriceView(
        symbol=symbol,
        mark=parse_decimal(data["mark"], "mark"),
        bid=bid,
        ask=ask,
        ts=int(data["markTs"] if "markTs" in data else data["ts"]),
        source="redis",
        quote_ts=None if quote_ts is None or bid is None or ask is None else int(quote_ts),
    )


class PriceService:
    def __init__(
        self,
        client: redis.Redis,
        exchange: Exchange,
        clock: Clock,
        *,
        prefix: str = "",
        max_age_ms: int = 5_000,
        memory_ms: int = 100,
    ) -> None:
        self._client = client
        self._exchange = exchange
        self._clock = clock
        self._prefix = prefix
        self._max_age_ms = max_age_ms
        self._memory_ms = memory_ms
        self._memory: dict[str, tuple[int, PriceView]] = {}  # (read at, source "memory")
        self._lock = threading.Lock()

    def get(self, symbol: str, *, fresh: bool = False) -> PriceView:
        """The price of ``symbol``: a mark at most ``max_age_ms`` old, and a bid/ask at most
        ``max_age_ms`` old or none. ``fresh`` skips the in-process copy: a risk decision must
        see the mark that triggered it, not one up to ``memory_ms`` older."""
        now = self._clock.ms()
        with self._lock:
            cached = None if fresh else self._memory.get(symbol)
        if cached is not None and now - cached[0] <= self._memory_ms:
            view = self._current(cached[1], now)
            if view is not None:
                return view
        raw = self._client.get(price_key(self._prefix, symbol))
        if raw is not None:
            view = self._current(parse_price(symbol, raw), now)
            if view is not None:
                self._remember(view, now)
                return view
        try:
            mark = self._exchange.fetch_mark_price(symbol)
        except ExchangeUnavailable:
            raise
        view = PriceView(symbol=symbol, mark=mark, bid=None, ask=None, ts=now, source="rest")
        self._remember(view, now)
        return view

    def _current(self, view: PriceView, now: int) -> PriceView | None:
        """``view`` as far as it is fresh: None if its mark is too old; without its bid/ask
        if they are too old (a stale quote is no quote)."""
        if now - view.ts > self._max_age_ms:
            return None
        if view.quote_ts is not None and now - view.quote_ts > self._max_age_ms:
            return replace(view, bid=None, ask=None, quote_ts=None)
        return view

    def mark(self, symbol: str, *, fresh: bool = False) -> Decimal:
        return self.get(symbol, fresh=fresh).mark

    def forget(self, symbol: str | None = None) -> None:
        """Drop the in-process copy (all symbols when None): the next read goes to Redis/REST."""
        with self._lock:
            if symbol is None:
                self._memory.clear()
            else:
                self._memory.pop(symbol, None)

    def _remember(self, view: PriceView, now: int) -> None:
        with self._lock:
            self._memory[view.symbol] = (now, replace(view, source="memory"))
