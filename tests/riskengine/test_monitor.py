"""The monitor on synthetic books: no database, a real Redis."""

from __future__ import annotations

import uuid
from decimal import Decimal

import orjson
import redis

from pms.clock import TestClock
from pms.config import Settings
from pms.domain.enums import AccountStatus, LiquidationMode, Tier
from pms.domain.instrument import Instrument, LeverageBracket
from pms.messaging.events import EventPublisher
from pms.risk.snapshot import RiskPosition
from pms.risk.tiers import DEFAULT_THRESHOLDS
from pms.riskengine.books import AccountBook
from pms.riskengine.monitor import REENFORCE_MS, RiskMonitor

D = Decimal
BTC = "BTC/USDT:USDT"
INSTRUMENT = Instrument(
    BTC,
    "BTCUSDT",
    "BTC",
    "USDT",
    D("0.1"),
    D("0.001"),
    D("0.001"),
    D(1000),
    D("0.001"),
    D("0.001"),
    D(120),
    D(100),
    D("0.1"),
    D(10**7),
    True,
    (
        LeverageBracket(1, 125, D(0), D(50_000), D("0.004"), D(0)),
        LeverageBracket(2, 100, D(50_000), D(600_000), D("0.005"), D(50)),
    ),
)


def monitor(
    settings: Settings, client: redis.Redis, clock: TestClock, asked: list[tuple[int, str]]
) -> RiskMonitor:
    prefix = f"{settings.redis_prefix}mon-{uuid.uuid4().hex[:6]}:"
    m = RiskMonitor(
        client,
        None,
        lambda: {BTC: INSTRUMENT},
        EventPublisher(client, clock, prefix=prefix),
        clock,
        lambda s, r: asked.append((s, r)),
        prefix=prefix,
    )  # type: ignore[arg-type]
    m.marks = {BTC: D(60_000)}
    m.install(
        [
            AccountBook(
                7,
                D(1000),
                AccountStatus.ACTIVE,
                Tier.NORMAL,
                LiquidationMode.CLOSE,
                DEFAULT_THRESHOLDS,
                {BTC: RiskPosition(BTC, D("0.5"), D(60_000), 50)},
                [],
            )
        ]
    )
    return m


def test_equity_gone_twice_keeps_asking_for_enforcement(
    settings: Settings, redis_client: redis.Redis
) -> None:
    clock = TestClock()
    asked: list[tuple[int, str]] = []
    m = monitor(settings, redis_client, clock, asked)
    m.on_marks({BTC: D(57_000)})  # equity 1000 - 1500 < 0: ratio is infinite
    snap = orjson.loads(redis_client.get(f"{m._prefix}pms:risk:7"))
    assert snap["marginRatio"] == "Infinity" and snap["tier"] == "LIQUIDATION"
    assert asked == [(7, "tier NORMAL -> LIQUIDATION")]
    clock.advance(ms=REENFORCE_MS)
    m.on_marks({BTC: D(56_900)})  # infinite again: no arithmetic on infinities, asks again
    assert asked[-1] == (7, "still LIQUIDATION")


def test_only_holders_of_the_moved_symbol_are_evaluated(
    settings: Settings, redis_client: redis.Redis
) -> None:
    m = monitor(settings, redis_client, TestClock(), [])
    assert m.on_marks({"ETH/USDT:USDT": D(3000)}) == 0
    assert m.on_marks({BTC: D(60_010)}) == 1
    assert m.on_marks({BTC: D(60_010)}) == 0  # unchanged mark: nothing to do


def test_quiet_market_still_pushes_an_unfinished_liquidation(
    settings: Settings, redis_client: redis.Redis
) -> None:
    clock = TestClock()
    asked: list[tuple[int, str]] = []
    m = monitor(settings, redis_client, clock, asked)
    m.on_marks({BTC: D(58_220)})  # equity 110 < maintenance 116.4: LIQUIDATION
    assert asked == [(7, "tier NORMAL -> LIQUIDATION")]
    assert m.revisit() == 1 and len(asked) == 1  # within the second: not asked again yet
    clock.advance(ms=REENFORCE_MS)
    m.revisit()  # no mark moved, but the account is still beyond liquidation
    assert asked[-1] == (7, "still LIQUIDATION")
