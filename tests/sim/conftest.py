"""Fixtures: one simulator per module (walk paused, so prices move only when a test says)."""

from __future__ import annotations

import hashlib
import hmac
import time
from collections.abc import Iterator
from datetime import UTC, datetime
from typing import Any
from urllib.parse import urlencode

import pytest
import requests

from pms.clock import TestClock
from pms.exchange.ccxt_factory import make_binanceusdm
from pms.sim.runner import SimServer

BTC = "BTC/USDT:USDT"


@pytest.fixture(scope="module")
def sim() -> Iterator[SimServer]:
    with SimServer(seed=7, symbols=("BTCUSDT", "ETHUSDT", "SOLUSDT"), paused=True) as server:
        yield server


@pytest.fixture(autouse=True)
def _fresh(request: pytest.FixtureRequest) -> None:
    """Reset the module's simulator before each test that uses it."""
    if "sim" in request.fixturenames:
        request.getfixturevalue("sim").admin("/sim/reset", {})


@pytest.fixture(scope="module")
def ex(sim: SimServer) -> Any:
    exchange = make_binanceusdm(sim.url, sim.api_key, sim.secret, timeout_ms=5000)
    exchange.load_markets()
    return exchange


class Raw:
    """A plain signed HTTP client, for what ccxt hides (raw bodies, headers, bad signatures)."""

    def __init__(self, sim: SimServer) -> None:
        self.sim = sim
        self.http = requests.Session()

    def send(
        self,
        method: str,
        path: str,
        params: dict[str, Any] | None = None,
        *,
        signed: bool = True,
        secret: str | None = None,
        key: str | None = None,
        timestamp: int | None = None,
        raw: str | None = None,
    ) -> requests.Response:
        if raw is not None:
            query = raw
        else:
            items = dict(params or {})
            if signed:
                items.setdefault("timestamp", timestamp or int(time.time() * 1000))
            query = urlencode(items)
        if signed:
            mac = hmac.new((secret or self.sim.secret).encode(), query.encode(), hashlib.sha256)
            query = f"{query}&signature={mac.hexdigest()}"
        headers = {"X-MBX-APIKEY": key if key is not None else self.sim.api_key}
        url = self.sim.url + path
        if method in ("GET", "DELETE"):
            return self.http.request(method, f"{url}?{query}", headers=headers, timeout=10)
        headers["Content-Type"] = "application/x-www-form-urlencoded"
        return self.http.request(method, url, data=query, headers=headers, timeout=10)


@pytest.fixture(scope="module")
def raw(sim: SimServer) -> Raw:
    return Raw(sim)


class Clocked:
    """A simulator on a TestClock; signed requests carry the simulator's time."""

    def __init__(self, sim: SimServer, clock: TestClock) -> None:
        self.sim = sim
        self.clock = clock
        self.raw = Raw(sim)

    def send(self, method: str, path: str, params: dict[str, Any] | None = None) -> Any:
        return self.raw.send(method, path, params, timestamp=self.clock.ms())

    def advance(self, ms: int) -> None:
        self.sim.admin("/sim/clock", {"advanceMs": ms})


@pytest.fixture(scope="module")
def clocked() -> Iterator[Clocked]:
    clock = TestClock(datetime(2026, 3, 1, 1, tzinfo=UTC))
    with SimServer(clock=clock, seed=7, symbols=("BTCUSDT",), paused=True) as server:
        yield Clocked(server, clock)
