"""Market data: parsers for the combined stream and the market stream that keeps
``pms:price:{symbol}`` and ``pms:book:{symbol}``.

Per symbol the stream subscribes ``<s>@markPrice@1s`` (mark, index), ``<s>@bookTicker``
(bid/ask), ``<s>@depth@100ms`` (the local book) and ``<s>@aggTrade`` (last). The symbol set
changes on the live connection with ``SUBSCRIBE``/``UNSUBSCRIBE`` (:meth:`MarketStream.
set_symbols`), never by reconnecting.

Handlers only update memory and mark keys dirty; :class:`pms.streaming.cache.CacheWriter`
writes them coalesced and pipelined.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
from collections.abc import Callable, Iterable
from decimal import Decimal
from typing import Any, NamedTuple
from urllib.parse import quote

import orjson
import structlog
from websockets.asyncio.client import connect

from pms.domain.symbols import from_exchange_id, to_exchange_id
from pms.errors import PmsError
from pms.streaming.book import Applied, BookView, DepthDiff, LocalBook
from pms.streaming.cache import CacheWriter
from pms.streaming.reconnect import Connection
from pms.streaming.rest import ExchangeRest
from pms.streaming.status import BOOK_RESYNCS, StreamHealth

log = structlog.get_logger(__name__)

PRICE_KEY = "pms:price:"
BOOK_KEY = "pms:book:"
KINDS = ("markPrice@1s", "bookTicker", "depth@100ms", "aggTrade")
MAX_PARAMS = 200  # streams per SUBSCRIBE message (and per connection on Binance)


# --- parsers ---------------------------------------------------------------------------------
# Every value is outside input: a price must be finite and positive (a mark of 0 would zero
# every notional and maintenance margin, so every holder would read NORMAL), a quantity
# finite and not negative. Decimal() alone takes "0", "-1", "NaN" and "Infinity".
def _price(value: Any) -> Decimal:
    d = Decimal(value)
    if not (d.is_finite() and d > 0):
        raise ValueError(f"not a price: {value!r}")
    return d


def _qty(value: Any) -> Decimal:
    d = Decimal(value)
    if not (d.is_finite() and d >= 0):
        raise ValueError(f"not a quantity: {value!r}")
    return d


# Immutable NamedTuples rather than frozen dataclasses: these are built 20,000+ times a second
# and a frozen dataclass's ``__init__`` costs several times more.
class MarkPrice(NamedTuple):
    symbol: str
    mark: Decimal
    index_price: Decimal  # not ``index``: that is tuple.index
    funding_rate: Decimal
    event_ms: int


class BookTicker(NamedTuple):
    symbol: str
    update_id: int
    bid: Decimal
    bid_qty: Decimal
    ask: Decimal
    ask_qty: Decimal
    event_ms: int


class AggTrade(NamedTuple):
    symbol: str
    price: Decimal
    qty: Decimal
    event_ms: int


def parse_mark_price(d: dict[str, Any]) -> MarkPrice:
    """``<s>@markPrice@1s``::

    {"e":"markPriceUpdate","E":1767225600000,"s":"BTCUSDT","p":"60000.0","ap":"60000.0",
     "P":"60000.0","i":"60000.0","r":"0.00010000","T":1767254400000}
    """
    return MarkPrice(d["s"], _price(d["p"]), _price(d["i"]), Decimal(d["r"] or 0), int(d["E"]))


def parse_book_ticker(d: dict[str, Any]) -> BookTicker:
    """``<s>@bookTicker``::

    {"e":"bookTicker","u":1000004,"E":1767225600000,"T":1767225600000,"s":"BTCUSDT",
     "b":"59999.9","B":"0.712","a":"60000.1","A":"1.204"}
    """
    return BookTicker(
        d["s"],
        int(d["u"]),
        _price(d["b"]),
        _qty(d["B"]),
        _price(d["a"]),
        _qty(d["A"]),
        int(d["E"]),
    )


def parse_depth_update(d: dict[str, Any]) -> DepthDiff:
    """``<s>@depth@100ms``::

    {"e":"depthUpdate","E":1767225600000,"T":1767225600000,"s":"BTCUSDT","U":1000001,
     "u":1000004,"pu":1000000,"b":[["59999.9","0.712"]],"a":[["60000.1","0"]]}
    """
    return DepthDiff(
        symbol=d["s"],
        first_id=int(d["U"]),
        last_id=int(d["u"]),
        prev_id=int(d["pu"]),
        bids=tuple((_price(p), _qty(q)) for p, q in d["b"]),
        asks=tuple((_price(p), _qty(q)) for p, q in d["a"]),
        event_ms=int(d["E"]),
    )


def parse_agg_trade(d: dict[str, Any]) -> AggTrade:
    """``<s>@aggTrade``::

    {"e":"aggTrade","E":1767225600000,"s":"BTCUSDT","a":5,"p":"60000.1","q":"0.010",
     "nq":"0.010","f":7,"l":7,"T":1767225600000,"m":false}
    """
    return AggTrade(d["s"], _price(d["p"]), _qty(d["q"]), int(d["E"]))


# --- state -----------------------------------------------------------------------------------
class PriceState:
    """``pms:price:{symbol}``: ``{"mark","index","bid","bidQty","ask","askQty","last","ts",
    "markTs","quoteTs","source":"stream"}``, decimal strings. Each part carries its own
    receive time (our clock, ms), because on Binance the mark and the bid/ask come over two
    connections and one may stop while the other flows: ``markTs`` when the mark (and index)
    was received, ``quoteTs`` when the bid/ask was (null while there is none); ``ts`` is the
    mark's time too (``markTs``), kept for readers of the older format. The bid/ask are cleared
    when the connection that carries them closes (:meth:`MarketStream.on_close`)."""

    __slots__ = ("ask", "ask_qty", "bid", "bid_qty", "index", "last", "mark", "mark_ts", "quote_ts")

    def __init__(self) -> None:
        self.mark: Decimal | None = None
        self.index: Decimal | None = None
        self.bid: Decimal | None = None
        self.bid_qty: Decimal | None = None
        self.ask: Decimal | None = None
        self.ask_qty: Decimal | None = None
        self.last: Decimal | None = None
        self.mark_ts = 0
        self.quote_ts: int | None = None

    def clear_quote(self) -> None:
        self.bid = self.bid_qty = self.ask = self.ask_qty = None
        self.quote_ts = None

    def render(self) -> bytes:
        return orjson.dumps(
            {
                "mark": _s(self.mark),
                "index": _s(self.index),
                "bid": _s(self.bid),
                "bidQty": _s(self.bid_qty),
                "ask": _s(self.ask),
                "askQty": _s(self.ask_qty),
                "last": _s(self.last or self.mark),
                "ts": self.mark_ts,
                "markTs": self.mark_ts,
                "quoteTs": self.quote_ts,
                "source": "stream",
            }
        )


def _s(value: Decimal | None) -> str | None:
    return None if value is None else str(value)


class MarketCache:
    """Price states shared by every market connection, and the keys they live under."""

    def __init__(
        self,
        cache: CacheWriter,
        prefix: str = "",
        on_mark: Callable[[str, Decimal], None] | None = None,
    ) -> None:
        self.cache = cache
        self.prefix = prefix
        # Called with (canonical symbol, mark) on every mark update: the risk monitor's feed.
        # It must be cheap and never block (the feed only records the mark for its thread).
        self.on_mark = on_mark
        self.prices: dict[str, PriceState] = {}  # by exchange id

    def price_key(self, exchange_id: str) -> str:
        return f"{self.prefix}{PRICE_KEY}{from_exchange_id(exchange_id)}"

    def book_key(self, exchange_id: str) -> str:
        return f"{self.prefix}{BOOK_KEY}{from_exchange_id(exchange_id)}"


def stream_names(exchange_ids: Iterable[str], kinds: Iterable[str]) -> set[str]:
    kinds = tuple(kinds)
    return {f"{s.lower()}@{k}" for s in exchange_ids for k in kinds}


# --- the stream ------------------------------------------------------------------------------
class MarketStream:
    """One market-data connection (implements :class:`pms.streaming.reconnect.Stream`)."""

    def __init__(
        self,
        name: str,
        url: str,
        market: MarketCache,
        rest: ExchangeRest,
        health: StreamHealth,
        kinds: Iterable[str] = KINDS,
        *,
        snapshot_retry_s: float = 0.25,
    ) -> None:
        self.name = name
        self.url = url
        self.market = market
        self.rest = rest
        self.health = health
        self.kinds = tuple(kinds)
        self.symbols: set[str] = set()  # exchange ids
        self.books: dict[str, LocalBook] = {}
        self._subscribed: set[str] = set()
        self._conn: Connection | None = None
        self._snapshots: dict[str, asyncio.Task[None]] = {}
        self._ids = itertools.count(1)
        self._snapshot_retry_s = snapshot_retry_s
        self._with_depth = any(k.startswith("depth") for k in self.kinds)
        self._with_quotes = "bookTicker" in self.kinds
        self._prices_owner = any(k.startswith(("markPrice", "bookTicker")) for k in self.kinds)

    # --- Stream protocol -------------------------------------------------------------------
    async def open(self) -> Connection:
        streams = stream_names(self.symbols, self.kinds)
        url = f"{self.url}?streams={quote('/'.join(sorted(streams)), safe='/@')}"
        conn = await connect(url, max_queue=None, compression=None, max_size=1 << 22)
        self._subscribed = streams
        return conn

    async def on_open(self, conn: Connection, reconnect: bool) -> None:
        self._conn = conn
        # A change made while open() was connecting found no connection and left it to
        # open(), whose URL was already built: subscribe the difference now.
        want = stream_names(self.symbols, self.kinds)
        if want != self._subscribed:
            await self._command(conn, "UNSUBSCRIBE", sorted(self._subscribed - want))
            await self._command(conn, "SUBSCRIBE", sorted(want - self._subscribed))
            self._subscribed = want
        for symbol in self.symbols:
            self._resync(symbol, "connected")

    def on_message(self, raw: str | bytes, recv_ns: int) -> None:
        msg = orjson.loads(raw)
        data = msg.get("data")
        if data is None:
            if "error" in msg:
                log.error("stream command refused", stream=self.name, reply=msg)
            return
        try:
            self._on_data(data, recv_ns)
        except (ValueError, KeyError, TypeError, ArithmeticError) as exc:
            # One bad value is dropped, not a reason to reconnect (every book re-snapshotted):
            # the last good price stays, ageing; a dropped depth diff shows as a gap and the
            # book resyncs.
            log.warning("market message dropped", stream=self.name, error=repr(exc))

    def _on_data(self, data: dict[str, Any], recv_ns: int) -> None:
        kind = data.get("e")
        self.health.event_time(data.get("E"))
        if kind == "bookTicker":
            t = parse_book_ticker(data)
            st = self.market.prices.get(t.symbol)
            if st is not None:
                st.bid, st.bid_qty, st.ask, st.ask_qty = t.bid, t.bid_qty, t.ask, t.ask_qty
                st.quote_ts = self.health.last_ms
                self._touch_price(t.symbol, st, recv_ns)
        elif kind == "markPriceUpdate":
            m = parse_mark_price(data)
            st = self.market.prices.get(m.symbol)
            if st is not None:
                st.mark, st.index = m.mark, m.index_price
                st.mark_ts = self.health.last_ms
                self._touch_price(m.symbol, st, recv_ns)
                if self.market.on_mark is not None:
                    self.market.on_mark(from_exchange_id(m.symbol), m.mark)
        elif kind == "depthUpdate":
            self._on_depth(parse_depth_update(data), recv_ns)
        elif kind == "aggTrade":
            a = parse_agg_trade(data)
            st = self.market.prices.get(a.symbol)
            if st is not None:
                st.last = a.price
                self._touch_price(a.symbol, st, recv_ns)

    async def on_close(self, reason: str) -> None:
        self._conn = None
        self._subscribed = set()
        for task in self._snapshots.values():
            task.cancel()
        self._snapshots.clear()
        for symbol, book in self.books.items():
            book.reset()
            self.market.cache.touch(self.market.book_key(symbol), None)
        if self._with_quotes:
            # The bid/ask came over this connection: from now on nobody maintains them, and a
            # mark from another connection (or the next one) must not republish them.
            for symbol in self.symbols:
                st = self.market.prices.get(symbol)
                if st is not None and st.quote_ts is not None:
                    st.clear_quote()
                    self._touch_price(symbol, st, 0)

    # --- symbol set ----------------------------------------------------------------------
    async def set_symbols(self, symbols: Iterable[str]) -> None:
        """Stream exactly ``symbols`` (canonical); (un)subscribe on the live connection."""
        wanted = {to_exchange_id(s) for s in symbols}
        added, removed = wanted - self.symbols, self.symbols - wanted
        if not added and not removed:
            return
        self.symbols = wanted
        for s in added:
            if self._prices_owner:
                self.market.prices.setdefault(s, PriceState())
            if self._with_depth:
                self.books[s] = LocalBook(s, from_exchange_id(s))
        for s in removed:
            if self._prices_owner and self.market.prices.pop(s, None) is not None:
                self.market.cache.touch(self.market.price_key(s), None)
            if self.books.pop(s, None) is not None:
                self.market.cache.touch(self.market.book_key(s), None)
            task = self._snapshots.pop(s, None)
            if task is not None:
                task.cancel()
        log.info("market symbols", stream=self.name, added=sorted(added), removed=sorted(removed))
        conn = self._conn
        if conn is None:
            return  # the next open() subscribes the new set
        want = stream_names(wanted, self.kinds)
        try:
            await self._command(conn, "UNSUBSCRIBE", sorted(self._subscribed - want))
            await self._command(conn, "SUBSCRIBE", sorted(want - self._subscribed))
        except Exception as exc:
            # The reconnect loop notices the dead socket; open() subscribes the full set.
            log.warning("subscription change failed", stream=self.name, error=str(exc))
            return
        self._subscribed = want
        for s in added:
            self._resync(s, "subscribed")

    async def _command(self, conn: Connection, method: str, params: list[str]) -> None:
        for i in range(0, len(params), MAX_PARAMS):
            chunk = params[i : i + MAX_PARAMS]
            body = {"method": method, "params": chunk, "id": next(self._ids)}
            await conn.send(orjson.dumps(body).decode())

    # --- prices --------------------------------------------------------------------------
    def _touch_price(self, symbol: str, st: PriceState, recv_ns: int) -> None:
        if st.mark is not None:  # readers need a mark; it arrives within a second
            self.market.cache.touch(self.market.price_key(symbol), st, recv_ns)

    # --- books ---------------------------------------------------------------------------
    def _on_depth(self, diff: DepthDiff, recv_ns: int) -> None:
        book = self.books.get(diff.symbol)
        if book is None:
            return
        result = book.on_diff(diff)
        if result is Applied.APPLIED:
            if book.publishable:
                self.market.cache.touch(self.market.book_key(diff.symbol), BookView(book), recv_ns)
            else:
                self._resync(diff.symbol, "crossed book")
        elif result is Applied.GAP:
            log.warning("depth gap", symbol=diff.symbol, expected_pu=book.last_id, pu=diff.prev_id)
            self._resync(diff.symbol, "gap")
            book.buffer.append(diff)
        elif result is Applied.BUFFERED and diff.symbol not in self._snapshots:
            self._resync(diff.symbol, "buffering")

    def _resync(self, symbol: str, reason: str) -> None:
        """Unpublish the book and rebuild it from a snapshot plus the buffered diffs."""
        book = self.books.get(symbol)
        if book is None or self._conn is None:
            return
        if reason != "buffering":
            book.reset()
            self.market.cache.touch(self.market.book_key(symbol), None)
        if reason in ("gap", "crossed book"):
            BOOK_RESYNCS.labels(symbol).inc()
        if symbol not in self._snapshots:
            self._snapshots[symbol] = asyncio.create_task(self._snapshot(symbol, reason))

    async def _snapshot(self, symbol: str, reason: str) -> None:
        try:
            for attempt in itertools.count():
                book = self.books.get(symbol)
                if book is None:
                    return
                try:
                    snap = await self.rest.depth(symbol)
                except PmsError as exc:
                    log.warning("depth snapshot failed", symbol=symbol, error=exc.message)
                    await asyncio.sleep(min(5.0, self._snapshot_retry_s * 2**attempt))
                    continue
                if self.books.get(symbol) is not book or self._conn is None:
                    return
                if book.apply_snapshot(snap.last_update_id, snap.bids, snap.asks, snap.event_ms):
                    if book.publishable:
                        self.market.cache.touch(self.market.book_key(symbol), BookView(book))
                        log.info("book synced", symbol=symbol, reason=reason, id=book.last_id)
                        return
                    book.reset()
                await asyncio.sleep(self._snapshot_retry_s)
        finally:
            with contextlib.suppress(KeyError):
                if self._snapshots.get(symbol) is asyncio.current_task():
                    del self._snapshots[symbol]
