"""Run the simulator in-process: a background thread with its own event loop.

Usage in a test fixture::

    from pms.sim.runner import SimServer

    with SimServer(seed=7, symbols=("BTCUSDT", "ETHUSDT"), paused=True) as sim:
        ex = make_binanceusdm(sim.url, sim.api_key, sim.secret)
        sim.admin("/sim/price", {"symbol": "BTCUSDT", "price": "61000"})
        ...

Interface (kept small on purpose):

* ``SimServer(*, seed=1, symbols=DEFAULT_SYMBOLS, tick_ms=250, paused=False, clock=None,
  balance="1000000", api_key="pms-sim-key", secret="pms-sim-secret", host="127.0.0.1",
  port=0)`` — ``clock`` is any :class:`pms.clock.Clock`; pass a ``TestClock`` to move time
  with ``POST /sim/clock {"advanceMs": N}`` (or ``clock.advance`` + ``sim.admin("/sim/clock",
  {"advanceMs": 0})`` to run expiry checks);
* ``start()`` / ``stop()`` (idempotent) or use it as a context manager;
* ``url`` (``http://127.0.0.1:PORT``), ``ws_url`` (``ws://127.0.0.1:PORT``), ``port``,
  ``api_key``, ``secret``;
* ``admin(path, body=None, method=None) -> Any``: a plain HTTP call to ``/sim/...`` (POST when
  a body is given, else GET), raising ``RuntimeError`` on a non-200 answer.
"""

from __future__ import annotations

import asyncio
import json
import threading
import urllib.request
from collections.abc import Iterable
from decimal import Decimal
from types import TracebackType
from typing import Any

from aiohttp import web

from pms.clock import Clock, SystemClock
from pms.sim.app import SimApp
from pms.sim.instruments import DEFAULT_SYMBOLS
from pms.sim.state import SimConfig


class SimServer:
    def __init__(
        self,
        *,
        seed: int = 1,
        symbols: Iterable[str] = DEFAULT_SYMBOLS,
        tick_ms: int = 250,
        paused: bool = False,
        clock: Clock | None = None,
        balance: str = "1000000",
        api_key: str = "pms-sim-key",
        secret: str = "pms-sim-secret",  # noqa: S107 - the well-known simulator secret
        host: str = "127.0.0.1",
        port: int = 0,
    ) -> None:
        self.config = SimConfig(
            api_key=api_key,
            secret=secret,
            seed=seed,
            symbols=tuple(s.upper() for s in symbols),
            tick_ms=tick_ms,
            paused=paused,
            balance=Decimal(balance),
        )
        self.clock: Clock = clock or SystemClock()
        self.host = host
        self.port = port
        self.sim: SimApp | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None
        self._runner: web.AppRunner | None = None

    @property
    def api_key(self) -> str:
        return self.config.api_key

    @property
    def secret(self) -> str:
        return self.config.secret

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.port}"

    @property
    def ws_url(self) -> str:
        return f"ws://{self.host}:{self.port}"

    def start(self) -> SimServer:
        if self._thread is not None:
            return self
        ready = threading.Event()
        failure: list[BaseException] = []
        self._loop = asyncio.new_event_loop()

        def run() -> None:
            assert self._loop is not None
            asyncio.set_event_loop(self._loop)
            try:
                self._loop.run_until_complete(self._serve())
            except BaseException as exc:  # reported to the starting thread
                failure.append(exc)
                ready.set()
                return
            ready.set()
            self._loop.run_forever()

        self._thread = threading.Thread(target=run, name="pms-sim", daemon=True)
        self._thread.start()
        ready.wait(30)
        if failure:
            raise RuntimeError(f"simulator failed to start: {failure[0]!r}") from failure[0]
        return self

    async def _serve(self) -> None:
        self.sim = SimApp(self.config, self.clock)
        self._runner = web.AppRunner(self.sim.build(), handle_signals=False, shutdown_timeout=2)
        await self._runner.setup()
        site = web.TCPSite(self._runner, self.host, self.port, reuse_address=True)
        await site.start()
        self.port = int(self._runner.addresses[0][1])

    def stop(self) -> None:
        loop, thread = self._loop, self._thread
        if loop is None or thread is None:
            return
        if self._runner is not None:
            future = asyncio.run_coroutine_threadsafe(self._runner.cleanup(), loop)
            future.result(15)
        loop.call_soon_threadsafe(loop.stop)
        thread.join(15)
        loop.close()
        self._loop = self._thread = self._runner = None

    def call(self, fn: Any) -> Any:
        """Run ``fn()`` on the server's loop (for white-box inspection in tests)."""
        assert self._loop is not None

        async def wrapper() -> Any:
            return fn()

        return asyncio.run_coroutine_threadsafe(wrapper(), self._loop).result(10)

    def admin(self, path: str, body: Any = None, method: str | None = None) -> Any:
        data = None if body is None else json.dumps(body).encode()
        verb = method or ("GET" if body is None else "POST")
        request = urllib.request.Request(  # noqa: S310 - loopback admin URL we built
            self.url + path, data=data, method=verb, headers={"Content-Type": "application/json"}
        )
        try:
            with urllib.request.urlopen(request, timeout=10) as resp:  # noqa: S310
                return json.loads(resp.read() or b"null")
        except urllib.error.HTTPError as exc:
            raise RuntimeError(f"admin {path}: {exc.code} {exc.read().decode()}") from None

    def __enter__(self) -> SimServer:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()
