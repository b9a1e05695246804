"""Sync fixtures: per test module, a simulator (ETH at 3000) and an engine on a database and
Redis prefix of their own (position sums are global, so other suites' positions must not be
in it)."""

from __future__ import annotations

import uuid
from collections.abc import Iterator

import pytest

from pms.app import App, build_app
from pms.config import Settings
from pms.db import migrate
from pms.sim.runner import SimServer
from tests.conftest import create_database, drop_database


@pytest.fixture(scope="module")
def sim() -> Iterator[SimServer]:
    with SimServer(seed=5, symbols=("BTCUSDT", "ETHUSDT"), paused=True) as server:
        server.admin("/sim/price", {"symbol": "ETHUSDT", "price": "3000"})
        yield server


@pytest.fixture(scope="module")
def app(settings: Settings, sim: SimServer) -> Iterator[App]:
    name = f"pms_sync_{uuid.uuid4().hex[:8]}"
    url = create_database(name)
    own = settings.model_copy(
        update={
            "database_url": url,
            "sim_url": sim.url,
            "sim_api_key": sim.api_key,
            "redis_prefix": f"{settings.redis_prefix}{name}:",
        }
    )
    migrate.upgrade(own)
    built = build_app(own)
    yield built
    built.close()
    drop_database(name)
