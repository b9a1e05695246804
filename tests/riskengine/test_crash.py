"""A worker killed with SIGKILL in the middle of a liquidation: the redelivered enforcement
resumes the recorded plan and completes it once (one close order on the exchange)."""

from __future__ import annotations

import os
from decimal import Decimal
from pathlib import Path

import pytest
from sqlalchemy import select

from pms.config import Settings
from pms.db.models import LiquidationEvent, Order
from pms.db.session import unit_of_work
from pms.riskengine.trigger import EnforceSender
from tests.riskengine.conftest import Harness
from tests.support import WorkerFleet, wait_for

pytestmark = pytest.mark.slow
D = Decimal


def test_liquidation_survives_a_killed_worker(
    harness: Harness, risk_settings: Settings, tmp_path: Path
) -> None:
    h = harness
    sub = h.open_long("800", "0.3", 50).sub_account_id
    env = os.environ.copy() | {
        "PMS_DATABASE_URL": risk_settings.database_url,
        "PMS_REDIS_PREFIX": risk_settings.redis_prefix,
        "PMS_DRAMATIQ_NAMESPACE": f"{risk_settings.dramatiq_namespace}-crash",
        "PMS_SIM_URL": risk_settings.sim_url,
        "PMS_SIM_API_KEY": risk_settings.sim_api_key,
    }
    send = EnforceSender(h.app.redis, env["PMS_DRAMATIQ_NAMESPACE"], h.app.clock)
    mark = h.mark_for_ratio(sub, D("1.02"))
    h.sim.admin("/sim/price", {"symbol": "BTCUSDT", "price": str(mark)})
    h.sim.admin("/sim/latency", {"ms": 1500})
    first = WorkerFleet(env, processes=1, threads=2, log_path=tmp_path / "first.log").start()
    try:
        send(sub, "test: price crossed liquidation")

        def close_intent() -> bool:
            with unit_of_work(h.app.sessions) as s:
                return (
                    s.execute(
                        select(Order).where(
                            Order.sub_account_id == sub, Order.origin == "liquidation"
                        )
                    ).first()
                    is not None
                )

        wait_for(close_intent, 20, message="the liquidation's close order intent")
        first.kill()
        h.sim.admin("/sim/latency", {"ms": 0})
        with WorkerFleet(env, processes=1, threads=2, log_path=tmp_path / "second.log"):

            def done() -> bool:
                with unit_of_work(h.app.sessions) as s:
                    events = (
                        s.execute(
                            select(LiquidationEvent.status).where(
                                LiquidationEvent.sub_account_id == sub,
                                LiquidationEvent.action == "liquidate_close",
                            )
                        )
                        .scalars()
                        .all()
                    )
                    return bool(events) and all(e == "DONE" for e in events)

            wait_for(done, 30, message="the liquidation to complete")
        with unit_of_work(h.app.sessions) as s:
            closes = (
                s.execute(
                    select(Order).where(Order.sub_account_id == sub, Order.origin == "liquidation")
                )
                .scalars()
                .all()
            )
            events = (
                s.execute(
                    select(LiquidationEvent).where(
                        LiquidationEvent.sub_account_id == sub,
                        LiquidationEvent.action == "liquidate_close",
                    )
                )
                .scalars()
                .all()
            )
        assert len(events) == 1
        assert len(closes) == 1 and closes[0].status == "FILLED"
        on_exchange = [
            o
            for o in h.sim.admin("/sim/state")["orders"]
            if o["clientOrderId"] == closes[0].client_order_id
        ]
        assert len(on_exchange) == 1, "placed once on the exchange"
        assert h.state(sub)[1] == 0
    finally:
        first.kill()
        h.sim.admin("/sim/latency", {"ms": 0})
