"""Stream health: ``pms:stream:status``, ``stream_status`` events and Prometheus metrics.

``pms:stream:status`` is a hash, one field per stream, each a JSON object::

    HGET pms:stream:status market
    {"stream":"market","connected":true,"lastMessageTs":1767225600123,"reconnects":2,
     "messagesPerSec":20150.0,"lagMs":3,"since":1767225000000,"reason":null}

``lagMs`` is our clock minus the exchange's event time ``E`` of the last message (clock skew
included). A ``stream_status`` event (subAccountId null, the same object as ``data``) is
published on every connect and disconnect.

The hot path only bumps plain integers (:meth:`StreamHealth.seen`); counters reach Prometheus
and Redis once per :meth:`StatusBoard.tick`, so metrics cost nothing per message.

``pms:stream:user:live`` exists while the user stream is connected: every tick sets it with a
time to live of a few ticks, a disconnect deletes it, a dead streamer lets it expire. A
worker that sees it (:class:`UserStreamWatch`) leaves the booking of a placed order's fills
to the stream instead of asking the exchange for them (see ``docs/architecture.md``).
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from typing import Any

import orjson
import redis
import redis.asyncio as aioredis
import structlog
from prometheus_client import Counter, Gauge, Histogram

from pms.clock import Clock
from pms.messaging import wire
from pms.messaging.events import EVENTS_CHANNEL, EVENTS_STREAM, EventType, envelope

log = structlog.get_logger(__name__)

STATUS_KEY = "pms:stream:status"
USER_LIVE_KEY = "pms:stream:user:live"
USER_STREAM = "user"

MESSAGES = Counter("pms_stream_messages_total", "WebSocket messages received", ["stream"])
RECONNECTS = Counter("pms_stream_reconnects_total", "WebSocket reconnects", ["stream"])
CONNECTED = Gauge("pms_stream_connected", "1 while the stream is connected", ["stream"])
RATE = Gauge("pms_stream_messages_per_second", "Messages per second, last interval", ["stream"])
LAG = Gauge("pms_stream_lag_ms", "Local clock minus exchange event time, ms", ["stream"])
WRITE_LATENCY = Histogram(
    "pms_stream_cache_write_seconds",
    "Oldest message in a cache batch: receive to Redis write completed",
    buckets=(0.0005, 0.001, 0.002, 0.005, 0.01, 0.025, 0.05, 0.1, 0.5, 1.0),
)
BOOK_RESYNCS = Counter("pms_stream_book_resyncs_total", "Order book resyncs", ["symbol"])
FILLS = Counter("pms_stream_fills_total", "Fills seen on the user stream", ["outcome"])


class StreamHealth:
    """Mutable per-stream counters; the reconnect loop and the stream update them."""

    __slots__ = (
        "_counted",
        "_rate_at",
        "connected",
        "event_ms",
        "last_ms",
        "messages",
        "name",
        "rate",
        "reason",
        "reconnects",
        "since",
    )

    def __init__(self, name: str) -> None:
        self.name = name
        self.connected = False
        self.messages = 0
        self.last_ms = 0  # our clock, last message
        self.event_ms = 0  # exchange event time ``E`` of the last message that had one
        self.reconnects = 0
        self.since = 0
        self.reason: str | None = None
        self.rate = 0.0
        self._counted = 0
        self._rate_at = time.monotonic()

    def seen(self, now_ms: int) -> None:
        self.messages += 1
        self.last_ms = now_ms

    def event_time(self, value: object) -> None:
        """Keep a message's event time ``E`` if it is one (a positive integer): a string or
        a float kept here would break every later status tick."""
        if type(value) is int and value > 0:
            self.event_ms = value

    def view(self, now_ms: int) -> dict[str, Any]:
        lag = now_ms - self.event_ms if self.event_ms and self.connected else None
        return {
            "stream": self.name,
            "connected": self.connected,
            "lastMessageTs": self.last_ms or None,
            "reconnects": self.reconnects,
            "messagesPerSec": round(self.rate, 1),
            "lagMs": lag,
            "since": self.since or None,
            "reason": self.reason,
        }

    def roll(self, monotonic_now: float) -> int:
        """Close the rate window; return messages counted since the last roll."""
        new = self.messages - self._counted
        elapsed = monotonic_now - self._rate_at
        if elapsed > 0:
            self.rate = new / elapsed
        self._counted = self.messages
        self._rate_at = monotonic_now
        return new


class StatusBoard:
    """All streams' health, written to Redis and Prometheus; events on (dis)connect."""

    def __init__(
        self,
        client: aioredis.Redis,
        clock: Clock,
        *,
        prefix: str = "",
        monotonic: Callable[[], float] = time.monotonic,
        live_ttl_ms: int = 3000,
    ) -> None:
        self._client = client
        self._clock = clock
        self._prefix = prefix
        self._monotonic = monotonic
        self._live_ttl_ms = live_ttl_ms
        self.streams: dict[str, StreamHealth] = {}
        self.key = f"{prefix}{STATUS_KEY}"
        self.live_key = f"{prefix}{USER_LIVE_KEY}"

    def stream(self, name: str) -> StreamHealth:
        health = self.streams.get(name)
        if health is None:
            health = self.streams[name] = StreamHealth(name)
        return health

    async def connected(self, health: StreamHealth, reconnect: bool) -> None:
        health.connected = True
        health.since = self._clock.ms()
        health.reason = None
        CONNECTED.labels(health.name).set(1)
        if reconnect:
            health.reconnects += 1
            RECONNECTS.labels(health.name).inc()
        log.info("stream connected", stream=health.name, reconnects=health.reconnects)
        await self._announce(health)

    async def disconnected(self, health: StreamHealth, reason: str) -> None:
        was = health.connected
        health.connected = False
        health.reason = reason
        CONNECTED.labels(health.name).set(0)
        log.warning("stream disconnected", stream=health.name, reason=reason)
        if was:
            await self._announce(health)

    async def tick(self) -> None:
        """Roll rates into metrics and write every stream's status in one round trip."""
        now = self._clock.ms()
        mono = self._monotonic()
        mapping: dict[str, bytes] = {}
        for health in self.streams.values():
            new = health.roll(mono)
            if new:
                MESSAGES.labels(health.name).inc(new)
            RATE.labels(health.name).set(health.rate)
            view = health.view(now)
            if view["lagMs"] is not None:
                LAG.labels(health.name).set(view["lagMs"])
            mapping[health.name] = orjson.dumps(view)
        if not mapping:
            return
        pipe = self._client.pipeline(transaction=False)
        pipe.hset(self.key, mapping=mapping)  # type: ignore[arg-type]
        user = self.streams.get(USER_STREAM)
        if user is not None:
            if user.connected:
                pipe.set(self.live_key, b"1", px=self._live_ttl_ms)
            else:
                pipe.delete(self.live_key)
        await pipe.execute()

    async def _announce(self, health: StreamHealth) -> None:
        now = self._clock.ms()
        view = health.view(now)
        env = envelope(EventType.STREAM_STATUS, None, view, now)
        payload = wire.dumps(env)
        try:
            pipe = self._client.pipeline(transaction=True)
            pipe.hset(self.key, health.name, orjson.dumps(view))
            if health.name == USER_STREAM:
                if health.connected:
                    pipe.set(self.live_key, b"1", px=self._live_ttl_ms)
                else:
                    pipe.delete(self.live_key)
            pipe.publish(f"{self._prefix}{EVENTS_CHANNEL}{EventType.STREAM_STATUS.value}", payload)
            pipe.xadd(
                f"{self._prefix}{EVENTS_STREAM}",
                {"event": payload},
                maxlen=100_000,
                approximate=True,
            )
            await pipe.execute()
        except (aioredis.RedisError, OSError) as exc:
            log.warning("stream status not published", stream=health.name, error=str(exc))


class UserStreamWatch:
    """Is a streamer's user stream connected? (``pms:stream:user:live`` exists.)

    Asked on every order placement, so Redis is asked at most once per ``every_s`` per
    process; an error counts as "not connected" (the worker then books the fills itself).
    """

    def __init__(
        self,
        client: redis.Redis,
        prefix: str = "",
        *,
        every_s: float = 0.5,
        monotonic: Callable[[], float] = time.monotonic,
    ) -> None:
        self._client = client
        self._key = f"{prefix}{USER_LIVE_KEY}"
        self._every_s = every_s
        self._monotonic = monotonic
        self._lock = threading.Lock()
        self._live = False
        self._next = float("-inf")  # float-ok: a monotonic-clock deadline, not money

    def __call__(self) -> bool:
        now = self._monotonic()
        with self._lock:
            if now < self._next:
                return self._live
            self._next = now + self._every_s
        try:
            live = bool(self._client.exists(self._key))
        except (redis.RedisError, OSError) as exc:
            log.warning("user-stream liveness unknown; booking fills inline", error=str(exc))
            live = False
        self._live = live
        return live
