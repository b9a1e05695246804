"""Which symbols to stream: the configured ones plus every symbol with an open position, an
open order or a running algo.

The set is read from Postgres (in a thread) every ``refresh_s`` seconds and at once when an
``order_update`` or ``position_update`` event names a symbol not streamed yet (Redis pub/sub;
events of streamed symbols, i.e. nearly all of them, cost no query), then handed to
the market streams, which ``SUBSCRIBE``/``UNSUBSCRIBE`` the difference on their live
connection: a new position starts streaming without any reconnect.

A symbol leaves the set only after it has been unused for ``linger_s`` (so an order that is
cancelled and placed again does not flap the subscription).
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Awaitable, Callable, Iterable
from typing import Any

import orjson
import redis.asyncio as aioredis
import structlog
from sqlalchemy import select
from sqlalchemy.orm import Session, sessionmaker

from pms.db.models import AlgoRun, Order, Position
from pms.db.session import unit_of_work
from pms.domain.enums import OrderStatus
from pms.domain.symbols import is_canonical
from pms.messaging.events import EVENTS_CHANNEL, EventType

log = structlog.get_logger(__name__)

OPEN_STATUSES = [s.value for s in OrderStatus if s.is_open]
LIVE_ALGOS = ("RUNNING", "PAUSED")


def _algo_symbols(params: Any) -> set[str]:
    """``symbol`` or the ``symbol`` of each leg (baskets) in an algo's params."""
    found: set[str] = set()
    if isinstance(params, dict):
        sym = params.get("symbol")
        if isinstance(sym, str) and is_canonical(sym):
            found.add(sym)
        for key in ("legs", "orders", "symbols"):
            items = params.get(key)
            if isinstance(items, list):
                for item in items:
                    if isinstance(item, str) and is_canonical(item):
                        found.add(item)
                    else:
                        found |= _algo_symbols(item)
    return found


def active_symbols(session: Session) -> set[str]:
    """Symbols with an open position, an open order or a running algo."""
    symbols = set(
        session.execute(
            select(Position.symbol)
            .where(Position.closed_at.is_(None), Position.qty != 0)
            .distinct()
        ).scalars()
    )
    symbols |= set(
        session.execute(
            select(Order.symbol).where(Order.status.in_(OPEN_STATUSES)).distinct()
        ).scalars()
    )
    for params in session.execute(
        select(AlgoRun.params).where(AlgoRun.status.in_(LIVE_ALGOS))
    ).scalars():
        symbols |= _algo_symbols(params)
    return symbols


SymbolsTarget = Callable[[set[str]], Awaitable[None]]


class SubscriptionManager:
    def __init__(
        self,
        configured: Iterable[str],
        sessions: sessionmaker[Session],
        targets: list[SymbolsTarget],
        *,
        client: aioredis.Redis | None = None,
        prefix: str = "",
        refresh_s: float = 2.0,
        linger_s: float = 10.0,
        monotonic: Callable[[], float] = time.monotonic,
    ) -> None:
        self.configured = set(configured)
        self._sessions = sessions
        self._targets = targets
        self._client = client
        self._prefix = prefix
        self._refresh_s = refresh_s
        self._linger_s = linger_s
        self._monotonic = monotonic
        self._wake = asyncio.Event()
        self._last_used: dict[str, float] = {}
        self.current: set[str] = set()

    def load(self) -> set[str]:
        with unit_of_work(self._sessions) as s:
            return active_symbols(s)

    def desired(self, active: set[str]) -> set[str]:
        """Configured ∪ active ∪ recently active (``linger_s``)."""
        now = self._monotonic()
        for sym in active:
            self._last_used[sym] = now
        lingering = {s for s, t in self._last_used.items() if now - t < self._linger_s}
        for sym in [s for s in self._last_used if s not in lingering]:
            del self._last_used[sym]
        return self.configured | active | lingering

    async def refresh(self) -> set[str]:
        try:
            active = await asyncio.to_thread(self.load)
        except Exception as exc:  # Postgres down: keep streaming what we have
            log.warning("active symbols not loaded", error=str(exc))
            return self.current
        wanted = self.desired(active)
        if wanted != self.current:
            for target in self._targets:
                await target(wanted)
            self.current = wanted
        return wanted

    async def run(self) -> None:
        listener = asyncio.create_task(self._listen()) if self._client is not None else None
        try:
            while True:
                await self.refresh()
                # asyncio.timeout, not wait_for: on 3.11 wait_for can swallow the
                # cancellation that stops us when the wake-up lands at the same moment.
                with contextlib.suppress(TimeoutError):
                    async with asyncio.timeout(self._refresh_s):
                        await self._wake.wait()
                self._wake.clear()
        finally:
            if listener is not None:
                # Wait for it: its pub/sub connection must be closed before the caller closes
                # the client and the loop (left behind, it leaked an open connection there).
                listener.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await listener

    def poke(self) -> None:
        self._wake.set()

    def wanted_now(self, payload: bytes) -> bool:
        """Does this event name a symbol we do not stream yet? (Then refresh at once.) One
        for a streamed symbol changes nothing now: a symbol no longer used leaves at the
        next periodic refresh, after ``linger_s`` anyway."""
        try:
            symbol = orjson.loads(payload)["data"]["symbol"]
        except (orjson.JSONDecodeError, KeyError, TypeError):
            return True  # unknown shape: ask Postgres
        return symbol not in self.current

    async def _listen(self) -> None:
        """Wake :meth:`run` on an ``order_update`` / ``position_update`` event for a symbol
        not streamed yet (a busy account's events would otherwise cost a refresh each)."""
        assert self._client is not None
        channels = [
            f"{self._prefix}{EVENTS_CHANNEL}{t.value}"
            for t in (EventType.ORDER_UPDATE, EventType.POSITION_UPDATE)
        ]
        while True:
            pubsub = self._client.pubsub(ignore_subscribe_messages=True)
            try:
                await pubsub.subscribe(*channels)
                async for msg in pubsub.listen():
                    if self.wanted_now(msg["data"]):
                        self.poke()
            except (aioredis.RedisError, OSError) as exc:
                log.warning("event listener lost; retrying", error=str(exc))
                await asyncio.sleep(1.0)
            finally:
                await pubsub.aclose()  # type: ignore[no-untyped-call]
