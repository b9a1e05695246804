"""The streamer process: wires the pieces of :mod:`pms.streaming` and runs them until stopped.

Tasks on one event loop:

* one :func:`~pms.streaming.reconnect.run_stream` per market connection (the simulator serves
  every market stream on ``/stream``; Binance splits ``/public`` (depth, bookTicker) and
  ``/market`` (markPrice, aggTrade), so there it is two connections) and one for user data;
* the cache writer (coalesced, pipelined Redis writes);
* the fill sink (user-stream events → the booking path, in a thread);
* the subscription manager (symbol set from Postgres + events);
* the listen-key keepalive and the status board tick;
* the risk monitor (:mod:`pms.riskengine.feed`): every mark update is handed to its thread,
  which re-evaluates the holders and enqueues ``enforce_risk`` on ``pms.risk`` on a tier change.

After every user-stream connection an order-sync is enqueued (``sync_orders`` on
``pms.sync``), so fills missed during the gap are booked by the sync actor.

Shutdown (``stop`` set, e.g. by SIGINT/SIGTERM): streams cancelled (sockets closed), queued
fills drained, cache flushed, status written, connections closed.
"""

from __future__ import annotations

import asyncio
import contextlib
import uuid
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any

import redis.asyncio as aioredis
import structlog

from pms.app import App, build_app
from pms.clock import Clock, SystemClock
from pms.config import ExchangeKind, Settings
from pms.messaging import wire
from pms.riskengine.feed import RiskFeed
from pms.riskengine.monitor import RiskMonitor
from pms.riskengine.trigger import EnforceSender
from pms.streaming.cache import CacheWriter, FlushHook, stop_if_cancelled
from pms.streaming.commissions import ensure_usdt_commissions
from pms.streaming.fills import FillSink
from pms.streaming.market import KINDS, MarketCache, MarketStream
from pms.streaming.reconnect import ReconnectPolicy, run_stream
from pms.streaming.rest import ExchangeRest
from pms.streaming.status import StatusBoard
from pms.streaming.subscriptions import SubscriptionManager
from pms.streaming.userdata import KEEPALIVE_MS, UserStream

log = structlog.get_logger(__name__)

BINANCE_WS = "wss://fstream.binance.com"
SYNC_QUEUE = "pms.sync"
DEFAULT_SYMBOLS = ("BTC/USDT:USDT", "ETH/USDT:USDT")


@dataclass(frozen=True, slots=True)
class Endpoint:
    name: str
    url: str
    kinds: tuple[str, ...]


@dataclass(frozen=True, slots=True)
class StreamerConfig:
    symbols: tuple[str, ...] = DEFAULT_SYMBOLS
    policy: ReconnectPolicy = field(default_factory=ReconnectPolicy)
    status_every_s: float = 1.0
    keepalive_ms: int = KEEPALIVE_MS
    keepalive_check_s: float = 1.0
    refresh_s: float = 2.0
    linger_s: float = 10.0
    user_stream: bool = True
    drain_s: float = 5.0
    fill_linger_s: float = 0.01  # a lone user event waits this long for others to join its take
    risk: bool = True  # run the risk monitor on the marks this process receives


def ws_base(settings: Settings) -> str:
    if settings.exchange is ExchangeKind.SIM:
        url = settings.sim_url.rstrip("/")
        return (
            "ws://" + url.removeprefix("http://")
            if url.startswith("http://")
            else ("wss://" + url.removeprefix("https://"))
        )
    return BINANCE_WS


def market_endpoints(settings: Settings) -> list[Endpoint]:
    base = ws_base(settings)
    if settings.exchange is ExchangeKind.SIM:
        return [Endpoint("market", f"{base}/stream", KINDS)]
    return [
        Endpoint("public", f"{base}/public/stream", ("bookTicker", "depth@100ms")),
        Endpoint("market", f"{base}/market/stream", ("markPrice@1s", "aggTrade")),
    ]


def rest_credentials(settings: Settings) -> tuple[str | None, str, str]:
    if settings.exchange is ExchangeKind.SIM:
        return settings.sim_url, settings.sim_api_key, settings.sim_api_secret.get_secret_value()
    return (
        None,
        settings.binance_api_key.get_secret_value(),
        settings.binance_api_secret.get_secret_value(),
    )


class Streamer:
    def __init__(
        self,
        settings: Settings,
        config: StreamerConfig | None = None,
        *,
        app: App | None = None,
        clock: Clock | None = None,
        on_flush: FlushHook | None = None,
    ) -> None:
        self.settings = settings
        self.config = config or StreamerConfig()
        self.clock = clock or SystemClock()
        self._app = app
        self._on_flush = on_flush
        # Set while running (tests and the benchmark look inside).
        self.market_streams: list[MarketStream] = []
        self.user: UserStream | None = None
        self.sink: FillSink | None = None
        self.cache: CacheWriter | None = None
        self.board: StatusBoard | None = None
        self.subscriptions: SubscriptionManager | None = None
        self.syncs_enqueued = 0
        self.risk: RiskFeed | None = None
        self.running = asyncio.Event()

    def _risk_feed(self, app: App) -> RiskFeed:
        """The risk pass runs here, next to the marks: a mark change reaches the monitor
        without another hop, and enforcement goes to ``pms.risk`` as a Dramatiq message."""
        monitor = RiskMonitor(
            app.redis,
            app.sessions,
            app.instruments.all,
            app.events,
            self.clock,
            EnforceSender(app.redis, self.settings.dramatiq_namespace, self.clock),
            prefix=self.settings.redis_prefix,
        )
        return RiskFeed(monitor)

    async def run(self, stop: asyncio.Event) -> None:
        settings, cfg = self.settings, self.config
        own_app = self._app is None
        app = self._app or build_app(settings, clock=self.clock, db_pool=4)
        client = aioredis.Redis.from_url(settings.redis_url)
        rest = ExchangeRest(*rest_credentials(settings))
        board = self.board = StatusBoard(
            client,
            self.clock,
            prefix=settings.redis_prefix,
            # Three ticks: a streamer that stops ticking stops counting as connected.
            live_ttl_ms=max(100, round(3000 * cfg.status_every_s)),
        )
        cache = self.cache = CacheWriter(client, on_flush=self._on_flush)
        feed = self.risk = self._risk_feed(app) if cfg.risk else None
        market = MarketCache(cache, settings.redis_prefix, on_mark=feed.offer if feed else None)
        self.market_streams = [
            MarketStream(e.name, e.url, market, rest, board.stream(e.name), e.kinds)
            for e in market_endpoints(settings)
        ]
        sink = self.sink = FillSink(
            app.sessions, app.notifier, self.clock, linger_s=cfg.fill_linger_s
        )
        user = self.user = UserStream(
            ws_base(settings),
            rest,
            sink,
            board.stream("user"),
            self.clock,
            on_connected=lambda reconnect: self._on_user_connected(app, rest, reconnect),
            keepalive_ms=cfg.keepalive_ms,
        )
        subs = self.subscriptions = SubscriptionManager(
            cfg.symbols,
            app.sessions,
            [s.set_symbols for s in self.market_streams],
            client=client,
            prefix=settings.redis_prefix,
            refresh_s=cfg.refresh_s,
            linger_s=cfg.linger_s,
        )
        # The symbol set is known before the first connection, so it is in the URL.
        await subs.refresh()
        if feed is not None:
            await asyncio.to_thread(feed.start)

        streams: list[asyncio.Task[Any]] = [
            asyncio.create_task(run_stream(s, board, cfg.policy, clock=self.clock), name=s.name)
            for s in self.market_streams
        ]
        if cfg.user_stream:
            # An account with no activity sends nothing on its user stream: silence is normal
            # there (reconnecting every silence_s also ran an order-sync each time).
            user_policy = cfg.policy.quiet_allowed()
            streams.append(
                asyncio.create_task(run_stream(user, board, user_policy, clock=self.clock))
            )
            streams.append(asyncio.create_task(user.keepalive(cfg.keepalive_check_s)))
        streams.append(asyncio.create_task(subs.run()))
        writer = asyncio.create_task(cache.run())
        booker = asyncio.create_task(sink.run())
        ticker = asyncio.create_task(self._tick(board, cfg.status_every_s))
        everything = [*streams, writer, booker, ticker]
        log.info("streamer started", symbols=sorted(subs.current), exchange=settings.exchange)
        self.running.set()
        stopper = asyncio.create_task(stop.wait())
        failure: BaseException | None = None
        try:
            done, _ = await asyncio.wait([stopper, *everything], return_when="FIRST_COMPLETED")
            for task in done:
                if task is not stopper and not task.cancelled() and task.exception():
                    failure = task.exception()
                    log.error("streamer task failed", task=task.get_name(), error=repr(failure))
        finally:
            stopper.cancel()
            await _cancel(streams)  # sockets closed, books unpublished
            if feed is not None:
                await asyncio.to_thread(feed.stop)
            await sink.close(cfg.drain_s)
            await _cancel([booker, ticker, writer])
            with contextlib.suppress(Exception):
                await cache.flush()
                await board.tick()
            await rest.close()
            await client.aclose()
            if own_app:
                await asyncio.to_thread(app.close)
            self.running.clear()
            log.info("streamer stopped")
        if failure is not None:
            raise failure

    async def _on_user_connected(self, app: App, rest: ExchangeRest, reconnect: bool) -> None:
        await ensure_usdt_commissions(rest, enforce=self.settings.enforce_usdt_commissions)
        await self._order_sync(app, reconnect)

    async def _order_sync(self, app: App, reconnect: bool) -> None:
        """Enqueue ``sync_orders``: whatever happened while we were not listening is found."""
        command = {"requestId": str(uuid.uuid4()), "reason": "user-stream-reconnect"}
        try:
            await asyncio.to_thread(
                wire.send,
                app.redis,
                self.settings.dramatiq_namespace,
                "sync_orders",
                command,
                timestamp_ms=self.clock.ms(),
                queue_name=SYNC_QUEUE,
            )
        except Exception as exc:  # the periodic order-sync still runs
            log.error("order-sync not enqueued", error=str(exc))
            return
        self.syncs_enqueued += 1
        log.info("order-sync enqueued", requestId=command["requestId"], reconnect=reconnect)

    @staticmethod
    async def _tick(board: StatusBoard, every_s: float) -> None:
        while True:
            await asyncio.sleep(every_s)
            try:
                await board.tick()
            except (aioredis.RedisError, OSError) as exc:
                log.warning("stream status not written", error=str(exc))
            except Exception:  # a status that cannot be rendered must not stop the streams
                log.exception("stream status not rendered")
            stop_if_cancelled()


async def _cancel(tasks: Iterable[asyncio.Task[Any]], timeout: float = 10.0) -> None:
    tasks = list(tasks)
    for task in tasks:
        task.cancel()
    if not tasks:
        return
    _, pending = await asyncio.wait(tasks, timeout=timeout)
    for task in pending:  # never hang the shutdown on one stuck task
        log.error("task did not stop", task=task.get_name())


def parse_symbols(text: str) -> tuple[str, ...]:
    """``BTCUSDT,ETH/USDT:USDT`` → canonical symbols."""
    from pms.domain.symbols import from_exchange_id, is_canonical

    out = []
    for part in (p.strip() for p in text.split(",")):
        if part:
            out.append(part if is_canonical(part) else from_exchange_id(part))
    return tuple(out)


Runner = Callable[[asyncio.Event], Any]
