"""Postgres drops every connection of a running engine (a restart, a failover): the next
command still gets its answer, and nothing happens twice."""

from __future__ import annotations

import time
import uuid
from collections.abc import Callable

from sqlalchemy import Engine, func, select, text

from pms.app import build_app
from pms.commands import schemas as cmd
from pms.config import Settings
from pms.db.models import Order
from pms.db.session import unit_of_work
from pms.sim.runner import SimServer
from tests.factories import new_user
from tests.trading.conftest import BTC, Trader


def test_commands_survive_postgres_dropping_every_connection(
    sim_settings: Settings, engine: Engine, sim: SimServer, prices: Callable[..., None]
) -> None:
    name = f"pms-restart-{uuid.uuid4().hex[:8]}"
    url = sim_settings.database_url
    url += ("&" if "?" in url else "?") + f"application_name={name}"
    app = build_app(sim_settings.model_copy(update={"database_url": url}))
    try:
        t = Trader(app, new_user())
        created = t.send(
            "create_sub_account", (cmd.CreateSubAccount, app.accounts.create), name="d"
        )
        sub = created["data"]["subAccountId"]
        t.send("deposit", (cmd.Deposit, app.accounts.deposit), subAccountId=sub, amount="10000")
        with engine.connect() as conn:
            killed = conn.execute(
                text(
                    "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity"
                    " WHERE application_name = :n"
                ),
                {"n": name},
            ).scalar_one()
        assert killed >= 1
        time.sleep(0.05)
        orders_before = len(sim.admin("/sim/state")["orders"])
        request_id = uuid.uuid4().hex
        placed = t.send(
            "place_market_order",
            (cmd.PlaceMarketOrder, app.orders.place_market),
            requestId=request_id,
            subAccountId=sub,
            symbol=BTC,
            side="BUY",
            qty="0.002",
        )
        assert placed["ok"], placed
        assert len(sim.admin("/sim/state")["orders"]) == orders_before + 1
        with unit_of_work(app.sessions) as s:
            count = s.execute(
                select(func.count()).select_from(Order).where(Order.request_id == request_id)
            ).scalar_one()
            assert count == 1
    finally:
        app.close()
