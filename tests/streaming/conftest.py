"""Fixtures for the streamer: the simulator over real WebSockets, the streamer in-process on
its own thread and event loop (so a test can stop and restart it), the engine graph."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Callable, Iterator
from typing import Any

import pytest

from pms.app import App, build_app
from pms.clock import Clock
from pms.config import Settings
from pms.sim.runner import SimServer
from pms.streaming.reconnect import ReconnectPolicy
from streamer.app import Streamer, StreamerConfig
from tests.support import wait_for

FAST = ReconnectPolicy(initial_s=0.05, max_s=0.5, healthy_after_s=1.0, silence_s=10.0)


class StreamerThread:
    """``Streamer.run`` on a background thread with its own loop; ``stop()`` is graceful."""

    def __init__(self, streamer: Streamer) -> None:
        self.streamer = streamer
        self.loop: asyncio.AbstractEventLoop | None = None
        self.stop_event: asyncio.Event | None = None
        self.thread: threading.Thread | None = None
        self.error: BaseException | None = None

    def start(self) -> StreamerThread:
        started = threading.Event()

        async def main() -> None:
            self.loop = asyncio.get_running_loop()
            self.stop_event = asyncio.Event()
            started.set()
            await self.streamer.run(self.stop_event)

        def target() -> None:
            try:
                asyncio.run(main())
            except BaseException as exc:
                self.error = exc
                started.set()

        self.thread = threading.Thread(target=target, name="streamer", daemon=True)
        self.thread.start()
        started.wait(10)
        wait_for(lambda: self.streamer.running.is_set() or self.error, 15, message="streamer up")
        if self.error:
            raise self.error
        return self

    def call(self, fn: Callable[[], Any]) -> Any:
        """Run ``fn()`` (sync or returning a coroutine) on the streamer's loop."""
        assert self.loop is not None

        async def wrapper() -> Any:
            result = fn()
            if asyncio.iscoroutine(result):
                result = await result
            return result

        return asyncio.run_coroutine_threadsafe(wrapper(), self.loop).result(10)

    def stop(self) -> None:
        if self.thread is None or self.loop is None or self.stop_event is None:
            return
        if self.thread.is_alive():
            self.loop.call_soon_threadsafe(self.stop_event.set)
        self.thread.join(20)
        assert not self.thread.is_alive(), "streamer did not stop"
        self.thread = None
        if self.error:
            raise self.error


@pytest.fixture(scope="module")
def sim() -> Iterator[SimServer]:
    with SimServer(seed=5, symbols=("BTCUSDT", "ETHUSDT", "SOLUSDT"), paused=True) as server:
        server.admin("/sim/price", {"symbol": "BTCUSDT", "price": "60000"})
        server.admin("/sim/price", {"symbol": "ETHUSDT", "price": "3000"})
        yield server


@pytest.fixture(scope="module")
def sim_settings(settings: Settings, sim: SimServer) -> Settings:
    return settings.model_copy(update={"sim_url": sim.url, "sim_api_key": sim.api_key})


@pytest.fixture(scope="module")
def app(sim_settings: Settings) -> Iterator[App]:
    built = build_app(sim_settings)
    yield built
    built.close()


@pytest.fixture
def make_streamer(sim_settings: Settings, app: App) -> Iterator[Callable[..., StreamerThread]]:
    running: list[StreamerThread] = []

    def make(
        *, clock: Clock | None = None, settings: Settings | None = None, **config: Any
    ) -> StreamerThread:
        cfg = StreamerConfig(
            **{
                "symbols": ("BTC/USDT:USDT", "ETH/USDT:USDT"),
                "policy": FAST,
                "refresh_s": 0.5,
                "linger_s": 0.0,
                "status_every_s": 0.2,
                **config,
            }
        )
        st = StreamerThread(Streamer(settings or sim_settings, cfg, app=app, clock=clock))
        running.append(st)
        return st.start()

    yield make
    for st in running:
        st.stop()
