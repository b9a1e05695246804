"""Risk-engine fixtures: the simulator, an engine graph on a database of its own (house
positions and position sums are global), a monitor whose enforcement runs in-process."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from datetime import UTC, datetime
from decimal import Decimal
from typing import Any

import pytest
from sqlalchemy import select

from pms.app import App, build_app
from pms.clock import Clock, TestClock
from pms.commands import schemas as cmd
from pms.config import Settings
from pms.db import migrate
from pms.db.models import LedgerEntry, LiquidationEvent, Position, SubAccount
from pms.db.session import unit_of_work
from pms.riskengine.enforce import RiskEnforcer
from pms.riskengine.monitor import RiskMonitor
from pms.sim.runner import SimServer
from tests.conftest import create_database, drop_database
from tests.factories import new_user
from tests.trading.conftest import BTC, Trader

D = Decimal
MMR = D("0.004")  # BTCUSDT's first bracket (notional < 50,000): MMR 0.4%, cum 0


@pytest.fixture(scope="module")
def sim() -> Iterator[SimServer]:
    with SimServer(seed=3, symbols=("BTCUSDT", "ETHUSDT"), paused=True) as server:
        yield server


@pytest.fixture(scope="module")
def risk_settings(settings: Settings, sim: SimServer) -> Iterator[Settings]:
    name = f"pms_risk_{uuid.uuid4().hex[:8]}"
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
    yield own
    drop_database(name)


@pytest.fixture(scope="module")
def app(risk_settings: Settings) -> Iterator[App]:
    built = build_app(risk_settings)
    yield built
    built.close()


class Harness:
    """Drives one sub-account through prices: sets the simulator's mark, runs the risk pass,
    and runs enforcement in-process when the monitor asks for it."""

    def __init__(self, app: App, sim: SimServer, monitor_clock: Clock | None = None) -> None:
        self.app = app
        self.sim = sim
        # Enforcement's own time (its events' completed_at, the backoff after failures):
        # frozen at the start, moved by the test.
        self.clock = TestClock(datetime.now(UTC))
        self.enforcer = RiskEnforcer(app, clock=self.clock)
        self.enforced: list[tuple[int, str]] = []
        self.monitor = RiskMonitor(
            app.redis,
            app.sessions,
            app.instruments.all,
            app.events,
            monitor_clock or app.clock,
            self._enforce,
            prefix=app.settings.redis_prefix,
        )

    def _enforce(self, sub_account_id: int, reason: str) -> None:
        self.enforced.append((sub_account_id, reason))
        self.enforcer.enforce(sub_account_id, reason)
        self.monitor.reload([sub_account_id])

    def open_long(self, balance: str, qty: str, leverage: int, mode: str = "close") -> Trader:
        t = Trader(self.app, new_user())
        t.sub_account_id = t.send(
            "create_sub_account", (cmd.CreateSubAccount, self.app.accounts.create), name="risk"
        )["data"]["subAccountId"]
        t.send(
            "deposit",
            (cmd.Deposit, self.app.accounts.deposit),
            subAccountId=t.sub_account_id,
            amount=balance,
        )
        rules = t.send(
            "update_risk_rules",
            (cmd.UpdateRiskRules, self.app.accounts.update_risk_rules),
            role="admin",
            subAccountId=t.sub_account_id,
            maxLeverage=leverage,
            maxExposureMultiple=100,
            liquidationMode=mode,
        )
        assert rules["ok"], rules
        bought = t.send(
            "place_market_order",
            (cmd.PlaceMarketOrder, self.app.orders.place_market),
            subAccountId=t.sub_account_id,
            symbol=BTC,
            side="BUY",
            qty=qty,
            leverage=leverage,
        )
        assert bought["ok"], bought
        self.monitor.load_all()
        return t

    def close_position(self, t: Trader) -> None:
        """The trader's ``close_position`` on BTC (a reduce-only market order), booked."""
        closed = t.send(
            "close_position",
            (cmd.ClosePosition, self.app.orders.close_position),
            subAccountId=t.sub_account_id,
            symbol=BTC,
        )
        assert closed["ok"], closed

    def state(self, sub: int) -> tuple[D, D, D]:
        """(wallet, qty, entry) from Postgres."""
        with unit_of_work(self.app.sessions) as s:
            wallet = s.get(SubAccount, sub).wallet_balance
            pos = s.execute(
                select(Position).where(Position.sub_account_id == sub, Position.closed_at.is_(None))
            ).scalar_one_or_none()
            return wallet, (pos.qty if pos else D(0)), (pos.entry_price if pos else D(0))

    def mark_for_ratio(self, sub: int, ratio: D) -> D:
        """The mark at which a single BTC long reaches ``ratio``, worked from
        ratio = Q·m·MMR / (W + Q·(m − E))  ⇒  m = r·(Q·E − W) / (Q·(r − MMR)), on the 0.1 tick."""
        wallet, qty, entry = self.state(sub)
        mark = ratio * (qty * entry - wallet) / (qty * (ratio - MMR))
        return mark.quantize(D("0.1"))

    def move(self, mark: D) -> None:
        self.sim.admin("/sim/price", {"symbol": "BTCUSDT", "price": str(mark)})
        self.app.prices.forget()  # no streamer here: read the exchange, not a 100 ms old copy
        self.monitor.on_marks({BTC: mark})

    def account(self, sub: int) -> SubAccount:
        with unit_of_work(self.app.sessions) as s:
            return s.get(SubAccount, sub)

    def events(self, sub: int) -> list[LiquidationEvent]:
        with unit_of_work(self.app.sessions) as s:
            return list(
                s.execute(
                    select(LiquidationEvent)
                    .where(LiquidationEvent.sub_account_id == sub)
                    .order_by(LiquidationEvent.id)
                ).scalars()
            )

    def ledger(self, sub: int) -> list[tuple[str, D]]:
        with unit_of_work(self.app.sessions) as s:
            return [
                (k, a)
                for k, a in s.execute(
                    select(LedgerEntry.kind, LedgerEntry.amount)
                    .where(LedgerEntry.sub_account_id == sub)
                    .order_by(LedgerEntry.id)
                )
            ]

    def published(self, type_: str, sub: int, since: str = "0") -> list[dict[str, Any]]:
        return [
            e
            for _, e in self.app.events.read(since, count=100_000)
            if e["type"] == type_ and e["subAccountId"] == sub
        ]

    def reenforce(self, sub: int, reason: str = "test: still past a tier") -> None:
        """What the monitor's once-a-second re-enforcement does in a quiet market."""
        self._enforce(sub, reason)


class CatchingHarness(Harness):
    """A Harness whose enforcement errors are kept (as the ``pms.risk`` actor logs a failed
    message) instead of aborting the risk pass that asked for it."""

    def __init__(self, app: App, sim: SimServer) -> None:
        super().__init__(app, sim)
        self.errors: list[Exception] = []

    def _enforce(self, sub_account_id: int, reason: str) -> None:
        self.enforced.append((sub_account_id, reason))
        try:
            self.enforcer.enforce(sub_account_id, reason)
        except Exception as exc:
            self.errors.append(exc)
        self.monitor.reload([sub_account_id])


@pytest.fixture
def harness(app: App, sim: SimServer) -> Harness:
    sim.admin("/sim/price", {"symbol": "BTCUSDT", "price": "60000"})
    app.prices.forget()
    return Harness(app, sim)


@pytest.fixture
def catching(app: App, sim: SimServer) -> CatchingHarness:
    for symbol, price in (("BTCUSDT", "60000"), ("ETHUSDT", "3000")):
        sim.admin("/sim/price", {"symbol": symbol, "price": price})
    app.prices.forget()
    return CatchingHarness(app, sim)
