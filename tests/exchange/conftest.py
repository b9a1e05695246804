"""Fixtures: one paused simulator per module, a relay in front of it, adapters that close."""

from __future__ import annotations

import itertools
from collections.abc import Callable, Iterator
from decimal import Decimal

import pytest

from pms.domain.enums import OrderType, Side
from pms.exchange.binance import BinanceExchange
from pms.exchange.model import OrderRequest
from pms.sim.runner import SimServer
from tests.exchange.servers import Relay

BTC = "BTC/USDT:USDT"
_ids = itertools.count(1)


@pytest.fixture(scope="module")
def sim() -> Iterator[SimServer]:
    with SimServer(seed=5, symbols=("BTCUSDT", "ETHUSDT"), paused=True) as server:
        yield server


@pytest.fixture(autouse=True)
def _fresh(request: pytest.FixtureRequest) -> None:
    if "sim" in request.fixturenames:
        request.getfixturevalue("sim").admin("/sim/reset", {})


@pytest.fixture
def relay(sim: SimServer) -> Iterator[Relay]:
    with Relay(sim.port) as r:
        yield r


@pytest.fixture
def adapter() -> Iterator[Callable[..., BinanceExchange]]:
    """``adapter(url, timeout_ms=..., idle_s=...)``: a BinanceExchange closed after the test."""
    made: list[BinanceExchange] = []

    def make(url: str, **kwargs: object) -> BinanceExchange:
        bx = BinanceExchange(url, "pms-sim-key", "pms-sim-secret", **kwargs)  # type: ignore[arg-type]
        made.append(bx)
        return bx

    yield make
    for bx in made:
        bx.close()


def market(side: Side = Side.BUY, qty: str = "0.002") -> OrderRequest:
    return OrderRequest(BTC, side, OrderType.MARKET, Decimal(qty), f"t-{next(_ids)}")


def sim_orders(sim: SimServer, client_order_id: str) -> list[dict[str, object]]:
    return [o for o in sim.admin("/sim/state")["orders"] if o["clientOrderId"] == client_order_id]
