"""Fixtures for the trading core: the simulator over real HTTP and an in-process engine graph."""

from __future__ import annotations

import uuid
from collections.abc import Callable, Iterator
from decimal import Decimal
from typing import Any

import pytest

from pms.app import App, build_app
from pms.config import Settings
from pms.sim.runner import SimServer
from tests.factories import new_user

BTC = "BTC/USDT:USDT"
ETH = "ETH/USDT:USDT"


@pytest.fixture(scope="module")
def sim() -> Iterator[SimServer]:
    with SimServer(seed=11, symbols=("BTCUSDT", "ETHUSDT"), paused=True) as server:
        yield server


@pytest.fixture
def prices(sim: SimServer) -> Callable[..., None]:
    def set_price(symbol: str = "BTCUSDT", price: str = "60000") -> None:
        sim.admin("/sim/price", {"symbol": symbol, "price": price})

    set_price("BTCUSDT", "60000")
    set_price("ETHUSDT", "3000")
    return set_price


@pytest.fixture(scope="module")
def sim_settings(settings: Settings, sim: SimServer) -> Settings:
    return settings.model_copy(update={"sim_url": sim.url, "sim_api_key": sim.api_key})


@pytest.fixture(scope="module")
def app(sim_settings: Settings) -> Iterator[App]:
    built = build_app(sim_settings)
    yield built
    built.close()


class Trader:
    """Sends commands through the same runner the actors use, returning the result."""

    def __init__(self, app: App, user: str) -> None:
        self.app = app
        self.user = user
        self.sub_account_id = 0

    def send(
        self, actor: str, handler_model: tuple[Any, Callable[..., Any]], **fields: Any
    ) -> dict[str, Any]:
        model, handler = handler_model
        command = {
            "requestId": fields.pop("requestId", uuid.uuid4().hex),
            "userId": self.user,
            **fields,
        }
        result = self.app.runner.run(actor, command, model, handler)
        assert result is not None
        return result


@pytest.fixture
def trader(app: App, prices: Callable[..., None]) -> Callable[[str], Trader]:
    from pms.commands import schemas as cmd

    def make(balance: str = "10000") -> Trader:
        t = Trader(app, new_user())
        created = t.send(
            "create_sub_account", (cmd.CreateSubAccount, app.accounts.create), name="desk"
        )
        t.sub_account_id = created["data"]["subAccountId"]
        if Decimal(balance) > 0:
            t.send(
                "deposit",
                (cmd.Deposit, app.accounts.deposit),
                subAccountId=t.sub_account_id,
                amount=balance,
            )
        return t

    return make
