"""All simulator state in one object, owned by the server's event loop (no locks needed).

``SimConfig`` is the frozen start-up configuration; ``SimState`` holds the markets, the
master account, the matching engine, funding, the WebSocket hub, listen keys, faults and
knobs. ``reset()`` rebuilds markets, account, orders and funding (its histories and
schedule) from the config (connections stay open).
"""

from __future__ import annotations

import secrets
from collections import deque
from dataclasses import dataclass, field
from decimal import Decimal

from pms.clock import Clock
from pms.sim.account import Account, m8
from pms.sim.faults import FaultBook
from pms.sim.feeds import Feeds
from pms.sim.funding import Funding
from pms.sim.instruments import DEFAULT_SYMBOLS, SymbolSpec, spec_for
from pms.sim.market import Market
from pms.sim.matching import Engine
from pms.sim.ws import Hub

LISTEN_KEY_TTL_MS = 60 * 60 * 1000


@dataclass(frozen=True, slots=True)
class SimConfig:
    api_key: str = "pms-sim-key"
    secret: str = "pms-sim-secret"
    seed: int = 1
    symbols: tuple[str, ...] = DEFAULT_SYMBOLS
    tick_ms: int = 250
    paused: bool = False
    balance: Decimal = Decimal("1000000")
    heartbeat_s: float = 180.0
    start_prices: dict[str, Decimal] = field(default_factory=dict)
    # Order, trade and income (tranId) ids start here. None: derived from the clock at
    # (re)start, so ids keep increasing across restarts and separate simulators never reuse
    # an id, as on the real exchange (the engine books fills once per (symbol, trade id) and
    # would otherwise drop a restarted simulator's new fills as duplicates). Set it for fully
    # reproducible ids.
    id_base: int | None = None


class ListenKeys:
    """The master account's listen key: one active key, 60 minutes per keepalive."""

    def __init__(self, clock: Clock) -> None:
        self.clock = clock
        self.key: str | None = None
        self.expires_ms = 0

    def create(self) -> str:
        if self.key is None:
            self.key = secrets.token_urlsafe(48).replace("-", "x").replace("_", "y")[:64]
        self.expires_ms = self.clock.ms() + LISTEN_KEY_TTL_MS
        return self.key

    def keepalive(self) -> str | None:
        if self.key is None:
            return None
        self.expires_ms = self.clock.ms() + LISTEN_KEY_TTL_MS
        return self.key

    def delete(self) -> str | None:
        key, self.key = self.key, None
        return key

    def due(self) -> str | None:
        """The key if it has just expired (it is then forgotten)."""
        if self.key is not None and self.clock.ms() >= self.expires_ms:
            return self.delete()
        return None

    def valid(self, key: str) -> bool:
        return self.key is not None and key == self.key and self.clock.ms() < self.expires_ms


class Window:
    """A sliding-window sum of counts (``span_ms`` long)."""

    def __init__(self, span_ms: int) -> None:
        self.span_ms = span_ms
        self.entries: deque[tuple[int, int]] = deque()
        self.total = 0

    def add(self, now: int, count: int) -> int:
        if count:
            self.entries.append((now, count))
            self.total += count
        while self.entries and self.entries[0][0] <= now - self.span_ms:
            self.total -= self.entries.popleft()[1]
        return self.total


class RateCounter:
    """Sliding-window counters behind ``X-MBX-USED-WEIGHT-1M`` / ``X-MBX-ORDER-COUNT-*``
    (counted only: limits are refused through faults, not by these counters)."""

    def __init__(self) -> None:
        self.weight_1m = Window(60_000)
        self.orders_10s = Window(10_000)
        self.orders_1m = Window(60_000)

    def record(
        self, now: int, weight: int, orders_10s: int, orders_1m: int
    ) -> tuple[int, int, int]:
        """Count one request; return (weight used in 1 min, orders in 10 s, orders in 1 min)."""
        return (
            self.weight_1m.add(now, weight),
            self.orders_10s.add(now, orders_10s),
            self.orders_1m.add(now, orders_1m),
        )


class SimState:
    def __init__(self, config: SimConfig, clock: Clock) -> None:
        self.config = config
        self.clock = clock
        self.hub = Hub(clock)
        self.feeds = Feeds(self.hub, clock)
        self.faults = FaultBook()
        self.listen_keys = ListenKeys(clock)
        self.rates = RateCounter()
        self.latency_ms = 0
        self.walk_paused = config.paused
        self.walk_speed = 1.0
        self.firehose_rate = 0
        self.firehose_symbols: list[str] = []
        self.specs: dict[str, SymbolSpec] = {}
        self.markets: dict[str, Market] = {}
        self.account: Account
        self.engine: Engine
        self.funding: Funding
        self.reset()

    def reset(self) -> None:
        self.specs = {s: spec_for(s) for s in self.config.symbols}
        self.markets = {
            s: Market(spec, self.config.seed, self.config.start_prices.get(s, Decimal(0)))
            for s, spec in self.specs.items()
        }
        self.account = Account(self.specs, self.mark, self.config.balance, self.clock.ms())
        self.engine = Engine(self.markets, self.account, self.feeds, self.clock.ms)
        base = self.config.id_base if self.config.id_base is not None else self.clock.ms() * 1000
        self.engine.start_ids(base)
        for market in self.markets.values():
            market.trade_id = base
        self.funding = Funding(self.markets, self.account, self.feeds, self.clock.ms(), base)
        self.faults.clear()
        self.latency_ms = 0
        self.walk_paused = self.config.paused
        self.walk_speed = 1.0

    def mark(self, symbol: str) -> Decimal:
        return self.markets[symbol].mark

    def market(self, symbol: str) -> Market:
        from pms.sim.errors import invalid_symbol

        m = self.markets.get(symbol.upper())
        if m is None:
            raise invalid_symbol()
        return m

    def snapshot(self) -> dict[str, object]:
        """``GET /sim/state``: orders, fills, positions, balances, armed faults, funding."""
        acct = self.engine.account
        return {
            "orders": [o.payload() for o in self.engine.orders.values()],
            "fills": [t.payload() for t in self.engine.trades],
            "positions": [
                acct.position_risk(s, self.engine.open_order_im().get(s, Decimal(0)))
                for s in self.specs
            ],
            "balances": {"USDT": m8(acct.wallet), "available": m8(self.engine.available())},
            "faults": self.faults.payload(),
            "prices": {s: str(m.mid) for s, m in self.markets.items()},
            "listenKey": self.listen_keys.key,
            "walk": {"paused": self.walk_paused, "speed": self.walk_speed},
            "funding": {
                "rates": {s: m8(m.funding_rate) for s, m in self.markets.items()},
                "nextFundingTime": self.funding.next_time,
            },
        }
