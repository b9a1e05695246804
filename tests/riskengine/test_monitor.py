"""The monitor on synthetic books: no database, a real Redis."""

from __future__ import annotations

import threading
import uuid
from decimal import Decimal
from typing import Any

import orjson
import pytest
import redis
from structlog.testing import capture_logs

from pms.clock import TestClock
from pms.config import Settings
from pms.domain.enums import AccountStatus, LiquidationMode, Side, Tier
from pms.domain.instrument import Instrument, LeverageBracket
from pms.messaging.events import EventPublisher
from pms.risk.snapshot import OpenOrder, RiskPosition, compute_snapshot
from pms.risk.tiers import DEFAULT_THRESHOLDS
from pms.riskengine.books import AccountBook
from pms.riskengine.document import DocumentPass
from pms.riskengine.monitor import REENFORCE_MS, WRITE_SLICE, RiskMonitor, snapshot_payload

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


def new_monitor(
    client: redis.Redis, clock: TestClock, prefix: str, asked: list[tuple[int, str]]
) -> RiskMonitor:
    """A monitor without Postgres, its keys under ``prefix``; enforcement requests go to
    ``asked``."""
    return RiskMonitor(
        client,
        None,
        lambda: {BTC: INSTRUMENT},
        EventPublisher(client, clock, prefix=prefix),
        clock,
        lambda s, r: asked.append((s, r)),
        prefix=prefix,
    )  # type: ignore[arg-type]


def monitor(
    settings: Settings, client: redis.Redis, clock: TestClock, asked: list[tuple[int, str]]
) -> RiskMonitor:
    m = new_monitor(client, clock, f"{settings.redis_prefix}mon-{uuid.uuid4().hex[:6]}:", asked)
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


def test_a_liquidating_account_back_in_a_calm_tier_is_still_pushed_every_second(
    settings: Settings, redis_client: redis.Redis
) -> None:
    """A liquidation that failed (or was held back) leaves the account LIQUIDATING with
    positions; if the price then recovers, no tier change comes, and the monitor used to
    stop asking, so the liquidation was never taken up again and the trader stayed locked
    out. It asks once a second while the book says LIQUIDATING, whatever the tier."""
    clock = TestClock()
    asked: list[tuple[int, str]] = []
    m = monitor(settings, redis_client, clock, asked)
    [book] = m.books.values()
    book.status = AccountStatus.LIQUIDATING
    m.install([book])
    m.on_marks({BTC: D(60_100)})  # NORMAL: far from any tier
    assert asked == [(7, "still NORMAL")]
    m.revisit()
    assert len(asked) == 1, "at most once a second"
    clock.advance(ms=REENFORCE_MS)
    m.revisit()  # no mark moved
    assert asked == [(7, "still NORMAL")] * 2
    book.status = AccountStatus.ACTIVE
    m.install([book])
    clock.advance(ms=REENFORCE_MS)
    m.revisit()
    assert len(asked) == 2, "an ACTIVE account in a calm tier is left alone"


def test_the_change_feed_catches_up_once_subscribed(
    settings: Settings, redis_client: redis.Redis
) -> None:
    """``follow_changes`` runs its catch-up (the feed reloads every book there) once it has
    subscribed, before it reads an event; the catch-up may end the feed, like ``stop``."""
    m = monitor(settings, redis_client, TestClock(), [])
    stop = threading.Event()
    caught_up: list[bool] = []

    def catch_up() -> None:
        caught_up.append(stop.is_set())
        stop.set()

    m.follow_changes(stop, on_subscribed=catch_up)
    assert caught_up == [False]


def _books(count: int) -> list[AccountBook]:
    return [
        AccountBook(
            i,
            D(1000 + i),
            AccountStatus.ACTIVE,
            Tier.NORMAL,
            LiquidationMode.CLOSE,
            DEFAULT_THRESHOLDS,
            {BTC: RiskPosition(BTC, D(i % 7 - 3).scaleb(-2) or D("0.5"), D(60_000 + i), 20)},
            [],
        )
        for i in range(1, count + 1)
    ]


def test_every_snapshot_of_a_pass_is_stored_as_rendered(
    settings: Settings, redis_client: redis.Redis
) -> None:
    clock = TestClock()
    prefix = f"{settings.redis_prefix}mon-{uuid.uuid4().hex[:6]}-ü:"  # not ASCII: bytes ≠ chars
    m = new_monitor(redis_client, clock, prefix, [])
    books = _books(2 * WRITE_SLICE + 17)  # several MSET slices, the last one short
    m.marks = {BTC: D(60_000)}
    m.install(books)

    assert m.on_marks({BTC: D("60123.4")}) == len(books)

    stored = redis_client.mget([f"{prefix}pms:risk:{b.sub_account_id}" for b in books])
    for book, raw in zip(books, stored, strict=True):
        snap = compute_snapshot(
            book.wallet, book.positions.values(), (), m.marks, {BTC: INSTRUMENT}
        )
        expected = snapshot_payload(book.sub_account_id, book, snap, Tier.NORMAL, clock.ms())
        assert raw == orjson.dumps(expected)
    # Ratios that moved off zero by 0.01 or more were published: with the stored document.
    by_id = {b.sub_account_id: raw for b, raw in zip(books, stored, strict=True)}
    raws = [f[b"event"] for _, f in redis_client.xrange(f"{prefix}pms:events")]
    assert raws
    for raw in raws:
        event = orjson.loads(raw)
        assert event["data"] == orjson.loads(by_id[event["subAccountId"]])
        expected = orjson.dumps({**event, "data": orjson.loads(by_id[event["subAccountId"]])})
        assert raw == expected  # the envelope orjson writes around the stored document


def test_a_connection_dropped_between_passes_does_not_lose_the_next(settings: Settings) -> None:
    own = redis.Redis.from_url(settings.redis_url)  # a pool of its own, to drop its connection
    try:
        m = monitor(settings, own, TestClock(), [])
        m.on_marks({BTC: D(60_010)})
        key = f"{m._prefix}pms:risk:7"
        before = orjson.loads(own.get(key))
        killer = redis.Redis.from_url(settings.redis_url)
        killer.client_kill_filter(_id=own.client_id())  # what a Redis restart does to the pool
        killer.close()

        m.on_marks({BTC: D(60_500)})

        after = orjson.loads(own.get(key))
        assert before["positions"][0]["mark"] == "60010"
        assert after["positions"][0]["mark"] == "60500"
    finally:
        own.close()


def test_a_write_cut_mid_pass_is_retried_through_the_client(
    settings: Settings, redis_client: redis.Redis, monkeypatch: pytest.MonkeyPatch
) -> None:
    m = monitor(settings, redis_client, TestClock(), [])

    def cut(writes: object) -> None:  # Redis going away between our send and its reply
        raise redis.ConnectionError("Connection closed by server.")

    monkeypatch.setattr(m, "_send_framed", cut)

    m.on_marks({BTC: D(60_700)})

    snap = orjson.loads(redis_client.get(f"{m._prefix}pms:risk:7"))
    assert snap["positions"][0]["mark"] == "60700"


ETH = "ETH/USDT:USDT"


def _holder(sub_account_id: int, orders: list[OpenOrder]) -> AccountBook:
    return AccountBook(
        sub_account_id,
        D(1000),
        AccountStatus.ACTIVE,
        Tier.NORMAL,
        LiquidationMode.CLOSE,
        DEFAULT_THRESHOLDS,
        {BTC: RiskPosition(BTC, D("0.5"), D(60_000), 50)},
        orders,
    )


def test_an_order_on_a_symbol_without_a_mark_does_not_stop_the_pass(
    settings: Settings, redis_client: redis.Redis
) -> None:
    # Arrange: account 8 works a limit order on ETH, account 9 a market order on ETH; ETH has
    # no mark anywhere (not in the monitor, not in Redis).
    m = monitor(settings, redis_client, TestClock(), [])
    limit = OpenOrder(ETH, Side.BUY, D(2), D(3000), 10)
    m.install(
        [
            *m.books.values(),
            _holder(8, [limit]),
            _holder(9, [OpenOrder(ETH, Side.BUY, D(1), None, 10)]),
        ]
    )

    # Act
    with capture_logs() as logs:
        evaluated = m.on_marks({BTC: D(59_000)})
        m.on_marks({BTC: D(59_100)})

    # Assert: the limit order is margined at its price; only the unpriceable account waits.
    assert evaluated == 2
    docs = {i: redis_client.get(f"{m._prefix}pms:risk:{i}") for i in (7, 8, 9)}
    assert docs[9] is None
    plain, with_order = orjson.loads(docs[7]), orjson.loads(docs[8])
    assert D(with_order["initialMargin"]) - D(plain["initialMargin"]) == D(600)  # 2·3000/10
    assert D(with_order["available"]) == D(plain["available"]) - D(600)
    skipped = [e for e in logs if e["event"].startswith("risk pass skips account")]
    assert [e["subAccountId"] for e in skipped] == [9]  # said once, not on every tick


def test_an_unexpected_error_in_one_account_does_not_blind_the_pass(
    settings: Settings, redis_client: redis.Redis, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Arrange: account 8's evaluation fails with an error nobody planned for.
    m = monitor(settings, redis_client, TestClock(), [])
    m.install([*m.books.values(), _holder(8, []), _holder(9, [])])
    real = DocumentPass.figures

    def figures(self: DocumentPass, book: AccountBook) -> Any:
        if book.sub_account_id == 8:
            raise KeyError("a bug in one book")
        return real(self, book)

    monkeypatch.setattr(DocumentPass, "figures", figures)

    # Act
    with capture_logs() as logs:
        evaluated = m.on_marks({BTC: D(59_000)})

    # Assert: the others are evaluated and stored; the failure is logged with its account.
    assert evaluated == 2
    assert redis_client.get(f"{m._prefix}pms:risk:8") is None
    assert all(redis_client.get(f"{m._prefix}pms:risk:{i}") for i in (7, 9))
    failed = [e for e in logs if e["event"] == "risk snapshot failed"]
    assert [e["subAccountId"] for e in failed] == [8]


def test_only_a_fresh_streamer_record_seeds_a_mark(
    settings: Settings, redis_client: redis.Redis
) -> None:
    """A record an hour old is a mark nobody streams any more (a streamer restarting, a
    symbol subscribed again): seeded from it, the pass judged accounts on a price long gone
    and could send them to enforcement. It now waits for a live mark."""
    clock = TestClock()
    m = new_monitor(redis_client, clock, f"{settings.redis_prefix}seed-{uuid.uuid4().hex[:6]}:", [])
    key = f"{m._prefix}pms:price:{BTC}"
    old = clock.ms() - 3_600_000
    redis_client.set(key, orjson.dumps({"mark": "40000", "ts": old, "markTs": old}))
    m._seed_marks({BTC})
    assert BTC not in m.marks
    redis_client.set(key, orjson.dumps({"mark": "60000", "ts": clock.ms(), "markTs": clock.ms()}))
    m._seed_marks({BTC})
    assert m.marks[BTC] == D(60000)
    redis_client.delete(key)
