"""Price resolution: in-process → Redis (``pms:price:{symbol}``, written by the streamer) →
exchange REST, with a staleness limit, the source recorded on every price.

Sample ``pms:price:BTC/USDT:USDT``::

    {"mark": "60012.5", "index": "60010.1", "bid": "60012.4", "bidQty": "1.2",
     "ask": "60012.6", "askQty": "0.8", "last": "60012.5", "ts": 1764000000000,
     "source": "stream"}
"""

from __future__ import annotations

import threading
from dataclasses import dataclass
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
    ts: int
    source: str  # memory | redis | rest


def price_key(prefix: str, symbol: str) -> str:
    return f"{prefix}{PRICE_KEY}{symbol}"


def parse_price(symbol: str, raw: bytes | str) -> PriceView:
    data: dict[str, Any] = orjson.loads(raw)
    return PriceView(
        symbol=symbol,
        mark=parse_decimal(data["mark"], "mark"),
        bid=parse_decimal(data["bid"], "bid") if data.get("bid") else None,
        ask=parse_decimal(data["ask"], "ask") if data.get("ask") else None,
        ts=int(data["ts"]),
        source=str(data.get("source", "redis")),
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
        self._memory: dict[str, PriceView] = {}
        self._lock = threading.Lock()

    def get(self, symbol: str, *, fresh: bool = False) -> PriceView:
        """The price of ``symbol``. ``fresh`` skips the in-process copy: a risk decision must
        see the mark that triggered it, not one up to ``memory_ms`` older."""
        now = self._clock.ms()
        with self._lock:
            cached = None if fresh else self._memory.get(symbol)
        if cached is not None and now - cached.ts <= self._memory_ms:
            return cached
        raw = self._client.get(price_key(self._prefix, symbol))
        if raw is not None:
            view = parse_price(symbol, raw)
            if now - view.ts <= self._max_age_ms:
                self._remember(view)
                return view
        try:
            mark = self._exchange.fetch_mark_price(symbol)
        except ExchangeUnavailable:
            raise
        view = PriceView(symbol=symbol, mark=mark, bid=None, ask=None, ts=now, source="rest")
        self._remember(view)
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

    def _remember(self, view: PriceView) -> None:
        with self._lock:
            self._memory[view.symbol] = view
