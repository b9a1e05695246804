"""One market per symbol: a seeded random walk for the mid and a synthetic book around it.

The book is a pure function of (mid, seed): ``LEVELS`` price levels each side, one tick apart,
each level's size drawn from a hash of its price (so a level keeps its size while the mid
moves and depth diffs stay small, like a real book). Liquidity taken by orders is remembered
until the mid moves, when the book "refills". Mark and index equal the mid.

The random walk draws integer tick moves from ``random.Random(seed ^ hash(symbol))``: the same
seed gives the same path. Only the draw uses floats; every price is a Decimal.
"""

from __future__ import annotations

import random
import zlib
from collections.abc import Iterator
from dataclasses import dataclass, field
from decimal import Decimal

from pms.domain.numbers import quantize_down, quantize_up
from pms.sim.instruments import SymbolSpec

LEVELS = 25
# How far matching walks a side (and the best remaining level is looked for): the synthetic
# book goes on past the LEVELS it publishes, so a large order never runs out of liquidity.
WALK_DEPTH = 400
WALK_TICKS = 4.0  # standard deviation of one walk step, in ticks
_MASK = (1 << 64) - 1


def _mix(x: int) -> int:
    """splitmix64: a fast, deterministic integer hash."""
    x = (x + 0x9E3779B97F4A7C15) & _MASK
    x = ((x ^ (x >> 30)) * 0xBF58476D1CE4E5B9) & _MASK
    x = ((x ^ (x >> 27)) * 0x94D049BB133111EB) & _MASK
    return x ^ (x >> 31)


Level = tuple[Decimal, Decimal]


@dataclass(frozen=True, slots=True)
class DepthUpdate:
    """A diff between two books, numbered like Binance (``U``..``u``, previous ``pu``)."""

    first_id: int
    last_id: int
    prev_id: int
    bids: list[Level]
    asks: list[Level]


@dataclass(slots=True)
class Market:
    spec: SymbolSpec
    seed: int
    mid: Decimal = Decimal(0)
    funding_rate: Decimal = Decimal("0.00010000")
    update_id: int = 1_000_000
    trade_id: int = 0
    agg_id: int = 0
    _rng: random.Random = field(init=False)
    _salt: int = field(init=False)
    _consumed: dict[Decimal, Decimal] = field(default_factory=dict)
    _qty_cache: dict[Decimal, Decimal] = field(default_factory=dict)
    _last_bids: dict[Decimal, Decimal] = field(default_factory=dict)
    _last_asks: dict[Decimal, Decimal] = field(default_factory=dict)

    def __post_init__(self) -> None:
        self._salt = _mix(self.seed ^ zlib.crc32(self.spec.symbol.encode()))
        self._rng = random.Random(self._salt)
        if self.mid == 0:
            self.mid = self.spec.start_price
        self._last_bids, self._last_asks = self._book_maps()

    @property
    def mark(self) -> Decimal:
        return self.mid

    @property
    def index(self) -> Decimal:
        return self.mid

    def set_mid(self, price: Decimal) -> bool:
        """Move the mid (rounded to the tick, at least one tick); True if it changed."""
        tick = self.spec.tick
        new = max(tick * 3, quantize_down(price, tick))
        if new == self.mid:
            return False
        self.mid = new
        self._consumed.clear()
        return True

    def walk_step(self, speed: float) -> bool:
        ticks = round(self._rng.gauss(0.0, WALK_TICKS * speed))
        if ticks == 0:
            return False
        return self.set_mid(self.mid + self.spec.tick * ticks)

    def best_bid(self) -> Decimal:
        tick = self.spec.tick
        return quantize_up(self.mid, tick) - tick

    def best_ask(self) -> Decimal:
        tick = self.spec.tick
        return quantize_down(self.mid, tick) + tick

    def _level_qty(self, price: Decimal) -> Decimal:
        cached = self._qty_cache.get(price)
        if cached is not None:
            return cached
        units = int(price / self.spec.tick)
        factor = Decimal(_mix(units ^ self._salt) % 181 + 20) / 100  # 0.20 .. 2.00
        qty = max(self.spec.step, quantize_down(self.spec.level_qty * factor, self.spec.step))
        if len(self._qty_cache) > 50_000:
            self._qty_cache.clear()
        self._qty_cache[price] = qty
        return qty

    def best_level(self, buy_side: bool) -> Level | None:
        """The best level that still has quantity (None if the walkable side is all taken).

        Not ``best_bid()``/``best_ask()``: those are the synthetic top prices, whose whole
        quantity may have been taken (taken liquidity stays taken until the mid moves), while
        the published book (depth, bookTicker) and matching already start at the next level.
        """
        return next(self.iter_levels(buy_side, WALK_DEPTH), None)

    def side_levels(self, buy_side: bool, depth: int = LEVELS) -> list[Level]:
        """Levels best first; ``buy_side`` True gives the bids."""
        return list(self.iter_levels(buy_side, depth))

    def iter_levels(self, buy_side: bool, depth: int = LEVELS) -> Iterator[Level]:
        """Lazily, best first: matching stops as soon as it has what it needs."""
        tick = self.spec.tick
        step = -tick if buy_side else tick
        price = self.best_bid() if buy_side else self.best_ask()
        consumed = self._consumed
        for _ in range(depth):
            if price <= 0:
                return
            qty = self._level_qty(price)
            if consumed:
                qty -= consumed.get(price, Decimal(0))
            if qty > 0:
                yield price, qty
            price += step

    def consume(self, price: Decimal, qty: Decimal) -> None:
        self._consumed[price] = self._consumed.get(price, Decimal(0)) + qty

    def _book_maps(self) -> tuple[dict[Decimal, Decimal], dict[Decimal, Decimal]]:
        return dict(self.side_levels(True)), dict(self.side_levels(False))

    def depth_diff(self) -> DepthUpdate | None:
        """The change since the last call, or None if the book did not change."""
        bids, asks = self._book_maps()
        db = _diff(self._last_bids, bids)
        da = _diff(self._last_asks, asks)
        if not db and not da:
            return None
        self._last_bids, self._last_asks = bids, asks
        prev = self.update_id
        first = prev + 1
        self.update_id = prev + len(db) + len(da)
        return DepthUpdate(first, self.update_id, prev, db, da)

    def skip_update_id(self) -> None:
        """Fault: lose one update id so the next diff's ``pu`` differs from the last ``u``."""
        self.update_id += 1

    def next_trade_id(self) -> int:
        self.trade_id += 1
        return self.trade_id

    def next_agg_id(self) -> int:
        self.agg_id += 1
        return self.agg_id


def _diff(old: dict[Decimal, Decimal], new: dict[Decimal, Decimal]) -> list[Level]:
    changes = [(p, q) for p, q in new.items() if old.get(p) != q]
    changes.extend((p, Decimal(0)) for p in old if p not in new)
    return changes
