"""The one generic reconnect loop, shared by every stream (market data, user data).

A stream is anything implementing :class:`Stream`: how to open a connection, what to do once
it is open, how to handle one message, what to do when it is gone. :func:`run_stream` owns
everything else:

* exponential backoff with jitter between attempts (0.1 s → 5 s by default), reset once a
  connection has stayed up for ``healthy_after_s``;
* a silence watchdog: no message for ``silence_s`` → the connection is closed and reopened
  (for a feed that always talks, like market data; :meth:`ReconnectPolicy.quiet_allowed` is
  the policy of a stream for which silence is normal, like user data: its dead connections
  are found by the websockets keepalive, a ping every 20 s answered within 20 s);
* planned rotation: a connection older than ``max_lifetime_s`` (Binance cuts at 24 h) is
  replaced before the exchange cuts it;
* a stream may ask for a reconnect by raising :class:`Reconnect` (e.g. ``listenKeyExpired``);
* cancellation (shutdown) closes the socket and reports the stream as disconnected.

Time is injected (``monotonic``, ``sleep``, ``rand``) so tests drive it.
"""

from __future__ import annotations

import asyncio
import contextlib
import math
import random
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, replace
from typing import Protocol

import structlog
from websockets.exceptions import ConnectionClosed, InvalidHandshake, InvalidURI

from pms.clock import Clock, SystemClock
from pms.streaming.cache import stop_if_cancelled
from pms.streaming.status import StatusBoard, StreamHealth

log = structlog.get_logger(__name__)


class Reconnect(Exception):
    """Raised by a stream to drop the current connection and open a new one."""


class Connection(Protocol):
    async def recv(self) -> str | bytes: ...

    async def send(self, message: str) -> None: ...

    async def close(self) -> None: ...


class Stream(Protocol):
    name: str

    async def open(self) -> Connection:
        """Open a fresh connection (may call REST first, e.g. for a listen key)."""

    async def on_open(self, conn: Connection, reconnect: bool) -> None:
        """The connection is up (subscribe, resync books, trigger order-sync, ...)."""

    def on_message(self, raw: str | bytes, recv_ns: int) -> None:
        """One message; synchronous and fast. May raise :class:`Reconnect`."""

    async def on_close(self, reason: str) -> None:
        """The connection is gone (drop state that is only valid while connected)."""


@dataclass(frozen=True, slots=True)
class ReconnectPolicy:
    initial_s: float = 0.1
    max_s: float = 5.0
    factor: float = 2.0
    jitter: float = 0.25  # ± fraction of the delay
    healthy_after_s: float = 10.0
    silence_s: float = 30.0
    max_lifetime_s: float = 23.5 * 3600
    watchdog_every_s: float = 0.25
    yield_every: int = 32  # messages read back to back before other tasks get a turn

    def quiet_allowed(self) -> ReconnectPolicy:
        """This policy without the silence rule."""
        return replace(self, silence_s=math.inf)  # float-ok: a duration, never money


def backoff_delay(attempt: int, policy: ReconnectPolicy, rand: float) -> float:
    """Delay before attempt ``attempt`` (0 = first retry); ``rand`` uniform in [0, 1)."""
    base = min(policy.max_s, policy.initial_s * policy.factor**attempt)
    return max(0.0, base * (1 - policy.jitter + 2 * policy.jitter * rand))


# What counts as "the connection failed" (everything else is a bug and propagates).
CONNECTION_ERRORS: tuple[type[BaseException], ...] = (
    ConnectionClosed,
    InvalidHandshake,
    InvalidURI,
    OSError,
    asyncio.TimeoutError,
    Reconnect,
)


class _Watch:
    """Per connection: why the watchdog closed it, if it did."""

    reason: str | None = None


async def run_stream(
    stream: Stream,
    board: StatusBoard,
    policy: ReconnectPolicy | None = None,
    *,
    clock: Clock | None = None,
    monotonic: Callable[[], float] = time.monotonic,
    sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
    rand: Callable[[], float] = random.random,
    opened: Callable[[], None] | None = None,
) -> None:
    """Keep ``stream`` connected until cancelled."""
    policy = policy or ReconnectPolicy()
    clock = clock or SystemClock()
    health = board.stream(stream.name)
    attempt = 0
    connections = 0
    while True:
        # A cancel swallowed by a library while the stream was (re)connecting leaves this
        # task "cancelling" and the loop would go on reconnecting (seen at shutdown when the
        # exchange went away first: the streamer's tasks outlived its 10 s stop timeout).
        stop_if_cancelled()
        conn: Connection | None = None
        started = monotonic()
        reason = "closed"
        try:
            conn = await stream.open()
            await stream.on_open(conn, connections > 0)
            connections += 1
            await board.connected(health, connections > 1)
            if opened is not None:
                opened()
            reason = await _pump(stream, conn, health, policy, clock, monotonic)
        except asyncio.CancelledError:
            await _close(stream, board, health, conn, "shutdown")
            raise
        except CONNECTION_ERRORS as exc:
            reason = f"{type(exc).__name__}: {exc}"[:200]
        except Exception as exc:  # a bug in a handler must not end the stream for good
            log.exception("stream handler failed", stream=stream.name)
            reason = f"error: {type(exc).__name__}: {exc}"[:200]
        await _close(stream, board, health, conn, reason)
        if monotonic() - started >= policy.healthy_after_s:
            attempt = 0
        delay = backoff_delay(attempt, policy, rand())
        attempt += 1
        stop_if_cancelled()
        log.info("stream reconnecting", stream=stream.name, reason=reason, delay_s=round(delay, 3))
        await sleep(delay)


async def _pump(
    stream: Stream,
    conn: Connection,
    health: StreamHealth,
    policy: ReconnectPolicy,
    clock: Clock,
    monotonic: Callable[[], float],
) -> str:
    """Read until the connection ends; returns why it ended."""
    watch = _Watch()
    born = monotonic()

    async def watchdog() -> None:
        # Silence is seen from the message counter, so the read loop pays nothing for it.
        seen, heard = health.messages, born
        while True:
            await asyncio.sleep(policy.watchdog_every_s)
            now = monotonic()
            if health.messages != seen:
                seen, heard = health.messages, now
            if now - heard > policy.silence_s:
                watch.reason = f"silent for {now - heard:.1f}s"
            elif now - born > policy.max_lifetime_s:
                watch.reason = "planned rotation"
            else:
                continue
            await conn.close()
            return

    dog = asyncio.create_task(watchdog())
    on_message = stream.on_message
    perf = time.perf_counter_ns
    yield_every = policy.yield_every
    n = 0
    try:
        while True:
            raw = await conn.recv()
            stamp = perf()
            health.seen(clock.ms())
            on_message(raw, stamp)
            n += 1
            if n >= yield_every:
                # recv() does not yield while frames are buffered: under a burst the cache
                # writer (and everything else) would starve. Let them run.
                n = 0
                await asyncio.sleep(0)
    except ConnectionClosed as exc:
        return watch.reason or f"closed: {exc}"[:200]
    finally:
        dog.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await dog


async def _close(
    stream: Stream,
    board: StatusBoard,
    health: StreamHealth,
    conn: Connection | None,
    reason: str,
) -> None:
    if conn is not None:
        with contextlib.suppress(Exception):
            async with asyncio.timeout(2.0):
                await conn.close()
    try:
        await stream.on_close(reason)
    finally:
        await board.disconnected(health, reason)
