"""The trading core through real Dramatiq workers (subprocesses), real Redis and Postgres,
and the simulator over HTTP: redelivery, kill -9, concurrency, hostile messages."""

from __future__ import annotations

import os
import time
import uuid
from collections.abc import Iterator
from decimal import Decimal
from pathlib import Path

import orjson
import pytest
from sqlalchemy import func, select
from sqlalchemy.orm import Session, sessionmaker

from pms.config import Settings
from pms.db.models import Fill, Order, Position, Request
from pms.db.session import unit_of_work
from pms.sim.runner import SimServer
from tests.support import Gateway, WorkerFleet, wait_for
from tests.trading.conftest import BTC

pytestmark = pytest.mark.slow
D = Decimal


@pytest.fixture(scope="module")
def worker_env(settings: Settings, sim: SimServer) -> dict[str, str]:
    return os.environ.copy() | {
        "PMS_SIM_URL": sim.url,
        "PMS_SIM_API_KEY": sim.api_key,
        "PMS_EXCHANGE_TIMEOUT_MS": "2000",
        "PMS_LOG_LEVEL": "INFO",
    }


@pytest.fixture(scope="module")
def fleet(
    worker_env: dict[str, str], tmp_path_factory: pytest.TempPathFactory
) -> Iterator[WorkerFleet]:
    log = tmp_path_factory.mktemp("workers") / "workers.log"
    with WorkerFleet(worker_env, processes=2, threads=8, log_path=log) as running:
        yield running


@pytest.fixture
def gateway(settings: Settings) -> Iterator[Gateway]:
    gw = Gateway(settings, user=f"u-{uuid.uuid4().hex[:8]}")
    yield gw
    gw.close()


def open_account(gw: Gateway, amount: str) -> int:
    created = gw.send("create_sub_account", name="desk")
    assert created["ok"], created
    sub = int(created["data"]["subAccountId"])
    funded = gw.send("deposit", subAccountId=sub, amount=amount)
    assert funded["ok"] and funded["data"]["balance"] == amount, funded
    return sub


def sim_orders(sim: SimServer, client_order_id: str) -> list[dict]:
    return [o for o in sim.admin("/sim/state")["orders"] if o["clientOrderId"] == client_order_id]


def test_round_trip_and_redelivered_message_is_one_order(
    fleet: WorkerFleet,
    gateway: Gateway,
    prices,
    sim: SimServer,
    session_factory: sessionmaker[Session],
) -> None:
    assert gateway.send("ping")["data"]["pong"] is True
    sub = open_account(gateway, "5000")
    command = gateway.command(subAccountId=sub, symbol=BTC, side="BUY", qty="0.003")
    gateway.enqueue("place_market_order", command)
    first = gateway.wait(command["requestId"])
    assert first["ok"] and first["data"]["status"] == "FILLED", first
    # A gateway retry and a broker redelivery: the same command, twice more. Each delivery
    # answers on the results channel; wait for both answers.
    listener = gateway.client.pubsub(ignore_subscribe_messages=True)
    listener.subscribe(gateway.results.channel)
    gateway.enqueue("place_market_order", command)
    gateway.enqueue("place_market_order", command)
    answers: list[dict] = []

    def two_answers() -> bool:
        message = listener.get_message(timeout=0.05)
        if message is not None:
            result = orjson.loads(message["data"])
            if result["requestId"] == command["requestId"]:
                answers.append(result)
        return len(answers) >= 2

    wait_for(two_answers, 20, interval=0, message="both duplicate deliveries answered")
    listener.close()
    assert answers == [first, first]
    assert len(sim_orders(sim, first["data"]["clientOrderId"])) == 1

    def booked() -> bool:  # the result answers on the acknowledgement; fills follow
        with unit_of_work(session_factory) as s:
            return bool(
                s.execute(
                    select(func.count()).select_from(Fill).where(Fill.sub_account_id == sub)
                ).scalar_one()
            )

    wait_for(booked, 10, message="the order's fill booked")
    with unit_of_work(session_factory) as s:
        assert (
            s.execute(
                select(func.count()).select_from(Order).where(Order.sub_account_id == sub)
            ).scalar_one()
            == 1
        )
        assert (
            s.execute(
                select(func.count()).select_from(Fill).where(Fill.sub_account_id == sub)
            ).scalar_one()
            >= 1
        )
        pos = s.execute(
            select(Position).where(Position.sub_account_id == sub, Position.closed_at.is_(None))
        ).scalar_one()
        assert pos.qty == D("0.003")


def test_hostile_messages_get_clear_errors_and_write_nothing(
    fleet: WorkerFleet, gateway: Gateway, session_factory: sessionmaker[Session]
) -> None:
    cases = [
        {"userId": "x", "subAccountId": 1, "symbol": BTC, "side": "BUY", "qty": "NaN"},
        {
            "userId": "x",
            "subAccountId": "1; DROP TABLE orders",
            "symbol": BTC,
            "side": "BUY",
            "qty": "1",
        },
        {"userId": "x", "subAccountId": 1, "symbol": BTC, "side": "HOLD", "qty": "1"},
        {"userId": "x", "subAccountId": 1, "symbol": BTC, "side": "BUY", "qty": "1e400"},
        {
            "userId": "x",
            "subAccountId": 1,
            "symbol": BTC,
            "side": "BUY",
            "qty": "1",
            "note": "x" * 20_000,
        },
    ]
    sent = []
    for fields in cases:
        command = {"requestId": uuid.uuid4().hex, **fields}
        sent.append(command["requestId"])
        gateway.enqueue("place_market_order", command)
        result = gateway.wait(command["requestId"])
        assert not result["ok"] and result["error"]["code"] == "VALIDATION_ERROR", (fields, result)
    ns = gateway.settings.dramatiq_namespace
    from pms.messaging import wire

    wire.send(
        gateway.client,
        ns,
        "no_such_actor",
        {"requestId": "nope"},
        timestamp_ms=0,
        queue_name="pms.trading",
    )
    gateway.client.hset(
        f"{gateway.settings.dramatiq_namespace}:pms.trading.msgs", "garbage", b"{not json"
    )
    gateway.client.rpush(f"{gateway.settings.dramatiq_namespace}:pms.trading", "garbage")
    assert gateway.send("ping")["ok"], "the fleet survives unknown actors and undecodable messages"
    refused = gateway.wait("nope")  # the unknown command was answered, not left to time out
    assert refused["error"]["code"] == "VALIDATION_ERROR", refused
    assert refused["error"]["message"] == "unknown command 'no_such_actor'"
    # Nothing of these commands was written. (Counted by their request ids: the database is
    # shared with the session's other fleets, and a message of a fleet stopped with it unacked
    # is redelivered to this one, whose orders it writes meanwhile.)
    with unit_of_work(session_factory) as s:
        for table in (Order, Request):
            written = select(func.count()).select_from(table)
            written = written.where(table.request_id.in_([*sent, "nope"]))
            assert s.execute(written).scalar_one() == 0, table


def test_concurrent_orders_on_one_account_never_overspend(
    fleet: WorkerFleet, gateway: Gateway, prices, session_factory: sessionmaker[Session]
) -> None:
    sub = open_account(gateway, "300")
    assert gateway.send("set_leverage", subAccountId=sub, symbol=BTC, leverage=10)["ok"]
    commands = [
        gateway.command(subAccountId=sub, symbol=BTC, side="BUY", qty="0.002") for _ in range(120)
    ]
    for c in commands:
        gateway.enqueue("place_market_order", c)
    results = [gateway.wait(c["requestId"], timeout=60) for c in commands]
    accepted = [r for r in results if r["ok"]]
    refused = [r for r in results if not r["ok"]]
    assert accepted and refused
    assert {r["error"]["code"] for r in refused} == {"INSUFFICIENT_MARGIN"}
    with unit_of_work(session_factory) as s:
        pos = s.execute(
            select(Position).where(Position.sub_account_id == sub, Position.closed_at.is_(None))
        ).scalar_one()
        from pms.accounts.service import get_account

        wallet = get_account(s, sub).wallet_balance
        initial_margin = abs(pos.qty) * pos.entry_price / 10
        assert pos.qty == D("0.002") * len(accepted)
        assert initial_margin <= wallet, f"overspent: IM {initial_margin} > wallet {wallet}"
        # With ~120 notional per order at 10x, 300 USDT covers about 24 orders, not 25.
        assert len(accepted) <= 25


def test_worker_killed_mid_command_completes_once(
    worker_env: dict[str, str],
    settings: Settings,
    prices,
    sim: SimServer,
    session_factory: sessionmaker[Session],
    tmp_path: Path,
) -> None:
    # Its own namespace: no other fleet may take the command.
    namespace = f"{settings.dramatiq_namespace}-kill-{uuid.uuid4().hex[:6]}"
    worker_env = worker_env | {"PMS_DRAMATIQ_NAMESPACE": namespace}
    gw = Gateway(
        settings.model_copy(update={"dramatiq_namespace": namespace}),
        user=f"u-{uuid.uuid4().hex[:8]}",
    )
    first = WorkerFleet(worker_env, processes=1, threads=2, log_path=tmp_path / "first.log").start()
    try:
        sub = open_account(gw, "5000")
        sim.admin("/sim/latency", {"ms": 1500})
        command = gw.command(subAccountId=sub, symbol=BTC, side="BUY", qty="0.004")
        gw.enqueue("place_market_order", command)

        def intent() -> bool:
            with unit_of_work(session_factory) as s:
                return (
                    s.execute(select(Order).where(Order.request_id == command["requestId"])).first()
                    is not None
                )

        wait_for(intent, 15, message="the order intent")
        first.kill()
        # Killed mid-command: the intent is stored, the exchange has not answered, no result.
        with unit_of_work(session_factory) as s:
            status = s.execute(
                select(Order.status).where(Order.request_id == command["requestId"])
            ).scalar_one()
        assert status == "PENDING_NEW"
        assert gw.results.get(command["requestId"]) is None
        sim.admin("/sim/latency", {"ms": 0})
        killed_at = time.monotonic()
        with WorkerFleet(worker_env, processes=1, threads=2, log_path=tmp_path / "second.log"):
            result = gw.wait(command["requestId"], timeout=30)
            elapsed = time.monotonic() - killed_at
        assert result["ok"], result
        assert elapsed < 10, f"redelivered and completed after {elapsed:.1f}s"
        assert len(sim_orders(sim, result["data"]["clientOrderId"])) == 1
        with unit_of_work(session_factory) as s:
            assert (
                s.execute(
                    select(Request.status).where(Request.request_id == command["requestId"])
                ).scalar_one()
                == "DONE"
            )
            pos = s.execute(
                select(Position).where(Position.sub_account_id == sub, Position.closed_at.is_(None))
            ).scalar_one()
            assert pos.qty == D("0.004")
    finally:
        first.kill()
        sim.admin("/sim/latency", {"ms": 0})
        gw.close()
