"""A local order book kept from the depth diff stream with Binance's snapshot procedure.

Binance USDⓈ-M (reference §2):

1. open ``<s>@depth@100ms`` and buffer the diffs;
2. GET ``/fapi/v1/depth`` → ``lastUpdateId``;
3. drop buffered diffs with ``u < lastUpdateId``;
4. the first diff applied must have ``U <= lastUpdateId <= u``;
5. afterwards each diff's ``pu`` must equal the previous diff's ``u``, else the book is
   broken: resync from step 1;
6. a quantity of 0 removes the level.

:class:`LocalBook` is the pure state machine (no I/O); the market stream fetches snapshots
and publishes. A book is only published while :attr:`LocalBook.live` and not crossed, so a
reader never sees a stale or crossed book.
"""

from __future__ import annotations

import enum
from collections.abc import Iterable, Sequence
from decimal import Decimal
from typing import NamedTuple

import orjson

ZERO = Decimal(0)
TOP_LEVELS = 20
MAX_BUFFER = 2_000

Level = tuple[Decimal, Decimal]


class DepthDiff(NamedTuple):
    """One ``depthUpdate``; see :func:`pms.streaming.market.parse_depth_update`."""

    symbol: str  # exchange id, e.g. BTCUSDT
    first_id: int  # U
    last_id: int  # u
    prev_id: int  # pu
    bids: tuple[Level, ...]
    asks: tuple[Level, ...]
    event_ms: int


class Applied(enum.Enum):
    APPLIED = "applied"
    BUFFERED = "buffered"  # waiting for a snapshot
    STALE = "stale"  # older than the book, ignored
    GAP = "gap"  # continuity broken: resync needed


class LocalBook:
    def __init__(self, symbol: str, canonical: str) -> None:
        self.symbol = symbol
        self.canonical = canonical
        self.bids: dict[Decimal, Decimal] = {}
        self.asks: dict[Decimal, Decimal] = {}
        self.last_id = 0
        self.live = False
        self.event_ms = 0
        self.buffer: list[DepthDiff] = []
        self.resyncs = 0
        # Live from a snapshot with no diff applied yet: the next diff must straddle
        # ``last_id`` (step 4) rather than continue it (step 5).
        self._fresh = False

    # --- procedure -----------------------------------------------------------------------
    def reset(self) -> None:
        """Forget everything and buffer diffs until the next snapshot (step 1)."""
        self.bids.clear()
        self.asks.clear()
        self.last_id = 0
        self.live = False
        self.buffer = []

    def on_diff(self, diff: DepthDiff) -> Applied:
        if not self.live:
            self.buffer.append(diff)
            if len(self.buffer) > MAX_BUFFER:
                del self.buffer[: len(self.buffer) - MAX_BUFFER]
            return Applied.BUFFERED
        if diff.last_id <= self.last_id:  # already in the book (a replay)
            return Applied.STALE
        if self._fresh:
            if diff.first_id > self.last_id and diff.prev_id != self.last_id:
                self.live = False
                self.resyncs += 1
                return Applied.GAP
            self._fresh = False
        elif diff.prev_id != self.last_id:
            self.live = False
            self.resyncs += 1
            return Applied.GAP
        self._apply(diff)
        return Applied.APPLIED

    def apply_snapshot(
        self, last_update_id: int, bids: Iterable[Level], asks: Iterable[Level], event_ms: int = 0
    ) -> bool:
        """Steps 2-5 with the buffered diffs. True when the book is live; False when the
        snapshot cannot be bridged to the buffer (too old: fetch another one)."""
        self.bids = {p: q for p, q in bids if q > ZERO}
        self.asks = {p: q for p, q in asks if q > ZERO}
        self.last_id = last_update_id
        self.event_ms = event_ms
        pending = [d for d in self.buffer if d.last_id >= last_update_id]
        self._fresh = not pending
        if pending:
            first = pending[0]
            if not first.first_id <= last_update_id <= first.last_id:
                # The snapshot predates the oldest diff we hold: a gap we cannot bridge.
                self.buffer = pending
                return False
            self._apply(first)
            for diff in pending[1:]:
                if diff.prev_id != self.last_id:
                    self.buffer = []
                    self.resyncs += 1
                    return False
                self._apply(diff)
        self.buffer = []
        self.live = True
        return True

    def _apply(self, diff: DepthDiff) -> None:
        for side, levels in ((self.bids, diff.bids), (self.asks, diff.asks)):
            for price, qty in levels:
                if qty == ZERO:
                    side.pop(price, None)
                else:
                    side[price] = qty
        self.last_id = diff.last_id
        self.event_ms = diff.event_ms

    # --- reading -------------------------------------------------------------------------
    def top(self, n: int = TOP_LEVELS) -> tuple[list[Level], list[Level]]:
        bids = sorted(self.bids.items(), key=lambda kv: kv[0], reverse=True)[:n]
        asks = sorted(self.asks.items(), key=lambda kv: kv[0])[:n]
        return bids, asks

    def crossed(self) -> bool:
        if not self.bids or not self.asks:
            return False
        return max(self.bids) >= min(self.asks)

    @property
    def publishable(self) -> bool:
        return self.live and not self.crossed()


class BookView:
    """What ``pms:book:{symbol}`` holds; rendered only when the cache writes it.

    ``{"symbol":"BTC/USDT:USDT","bids":[["59999.9","0.712"],...],"asks":[...],
    "lastUpdateId":1000004,"ts":1767225600000}`` (top 20 levels, best first; ``ts`` is the
    exchange event time of the last applied diff or snapshot).
    """

    __slots__ = ("book",)

    def __init__(self, book: LocalBook) -> None:
        self.book = book

    def render(self) -> bytes:
        bids, asks = self.book.top()
        return orjson.dumps(
            {
                "symbol": self.book.canonical,
                "bids": _levels(bids),
                "asks": _levels(asks),
                "lastUpdateId": self.book.last_id,
                "ts": self.book.event_ms,
            }
        )


def _levels(levels: Sequence[Level]) -> list[list[str]]:
    return [[str(p), str(q)] for p, q in levels]
