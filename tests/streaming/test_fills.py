"""The fill sink applies what the user stream queued in one transaction per take, each fill
booked once, in arrival order; a take that fails is applied event by event."""

from __future__ import annotations

import asyncio
import uuid
from datetime import UTC, datetime
from decimal import Decimal
from typing import Any

import orjson
from sqlalchemy import select

from pms.app import App
from pms.clock import SystemClock
from pms.db.models import Fill, Order, Position, SubAccount
from pms.db.session import unit_of_work
from pms.domain.enums import Side
from pms.exchange.model import TradeReport
from pms.streaming.fills import FillSink
from pms.streaming.userdata import OrderUpdate
from tests.factories import funded_account

BTC = "BTC/USDT:USDT"
FEE = Decimal("0.048")


def pending_order(app: App, sub_account_id: int, exchange_order_id: str) -> str:
    """An order intent as the worker persists it (PENDING_NEW); returns its clientOrderId."""
    coid = f"pms-t{uuid.uuid4().hex[:10]}"
    with unit_of_work(app.sessions) as s:
        s.add(
            Order(
                client_order_id=coid,
                sub_account_id=sub_account_id,
                symbol=BTC,
                side="BUY",
                type="MARKET",
                qty=Decimal("0.002"),
                reduce_only=False,
                post_only=False,
                leverage=10,
                status="PENDING_NEW",
                filled_qty=Decimal(0),
                origin="manual",
                request_id=uuid.uuid4().hex,
            )
        )
    return coid


def update(coid: str, exchange_order_id: str, trade_id: str | None) -> OrderUpdate:
    trade = (
        TradeReport(
            symbol=BTC,
            trade_id=trade_id,
            exchange_order_id=exchange_order_id,
            client_order_id=coid,
            side=Side.BUY,
            qty=Decimal("0.002"),
            price=Decimal("60000"),
            fee=FEE,
            fee_asset="USDT",
            is_maker=False,
            traded_at=datetime.now(UTC),
            order_status="FILLED",
        )
        if trade_id
        else None
    )
    return OrderUpdate(
        symbol=BTC,
        client_order_id=coid,
        exchange_order_id=exchange_order_id,
        execution_type="TRADE" if trade else "NEW",
        status="FILLED" if trade else "NEW",
        qty=Decimal("0.002"),
        price=Decimal(0),
        cum_filled=Decimal("0.002") if trade else Decimal(0),
        event_ms=0,
        trade=trade,
    )


def state(app: App, coid: str) -> tuple[str, str | None, list[str]]:
    with unit_of_work(app.sessions) as s:
        order = s.execute(select(Order).where(Order.client_order_id == coid)).scalar_one()
        fills = s.execute(select(Fill.exchange_trade_id).where(Fill.order_id == order.id))
        return order.status, order.exchange_order_id, [str(t) for t in fills.scalars()]


def account(app: App, sub_account_id: int) -> tuple[Decimal, Decimal, Decimal]:
    with unit_of_work(app.sessions) as s:
        wallet = s.get(SubAccount, sub_account_id).wallet_balance  # type: ignore[union-attr]
        position = s.execute(
            select(Position).where(
                Position.sub_account_id == sub_account_id, Position.closed_at.is_(None)
            )
        ).scalar_one()
        return wallet, position.qty, position.fees_paid


def test_one_take_books_every_fill_once_across_accounts(app: App) -> None:
    a, _ = funded_account(app.sessions, "5000")
    b, _ = funded_account(app.sessions, "5000")
    a1, a2, a3 = (pending_order(app, a, f"e{n}") for n in range(3))
    b1 = pending_order(app, b, "e9")
    t = uuid.uuid4().hex[:8]
    sink = FillSink(app.sessions, app.notifier, SystemClock())

    sink.handle_batch(
        [
            update(a1, "e0", None),
            update(a1, "e0", f"{t}-1"),
            update(b1, "e9", f"{t}-9"),
            update(a2, "e1", f"{t}-2"),
            update(a1, "e0", f"{t}-1"),  # the same fill again
            update(a3, "e2", None),  # accepted, not filled yet
        ]
    )

    assert (sink.booked, sink.duplicates) == (3, 1)
    assert state(app, a1) == ("FILLED", "e0", [f"{t}-1"])
    assert state(app, a2) == ("FILLED", "e1", [f"{t}-2"])
    assert state(app, b1) == ("FILLED", "e9", [f"{t}-9"])
    assert state(app, a3) == ("NEW", "e2", [])
    # Two fills of one account in one transaction: the second built on the first.
    assert account(app, a) == (Decimal(5000) - 2 * FEE, Decimal("0.004"), 2 * FEE)
    assert account(app, b) == (Decimal(5000) - FEE, Decimal("0.002"), FEE)
    # One MULTI for the take: the position cache holds each account's latest booking.
    cached = orjson.loads(app.redis.get(f"{app.settings.redis_prefix}pms:pos:{a}") or b"{}")
    assert [p["qty"] for p in cached["positions"]] == ["0.004"]

    sink.handle_batch([update(a2, "e1", f"{t}-2")])  # seen again later: nothing changes
    assert sink.duplicates == 2
    assert account(app, a) == (Decimal(5000) - 2 * FEE, Decimal("0.004"), 2 * FEE)


def test_a_take_that_fails_is_applied_event_by_event(app: App) -> None:
    a, _ = funded_account(app.sessions, "5000")
    coids = [pending_order(app, a, f"x{n}") for n in range(3)]
    t = uuid.uuid4().hex[:8]

    class FailingTogether(FillSink):
        takes: list[int] = []

        def apply_batch(self, updates: list[OrderUpdate]) -> Any:
            self.takes.append(len(updates))
            if len(updates) > 1:
                raise RuntimeError("deadlock detected")  # as Postgres might answer
            return super().apply_batch(updates)

    async def to_thread(fn: Any, *args: Any) -> Any:
        return fn(*args)

    sink = FailingTogether(app.sessions, app.notifier, SystemClock(), to_thread=to_thread)

    async def main() -> None:
        for n, coid in enumerate(coids):
            sink.order_update(update(coid, f"x{n}", f"{t}-{n}"))
        runner = asyncio.create_task(sink.run())
        assert await sink.drain(5) == 0
        runner.cancel()

    asyncio.run(main())
    assert sink.takes == [3, 1, 1, 1]
    assert [state(app, c)[2] for c in coids] == [[f"{t}-{n}"] for n in range(3)]
    assert sink.booked == 3


def test_events_of_a_committed_take_are_published_once_redis_is_back(app: App) -> None:
    """Redis refused the events of a committed take: the take used to be applied again
    event by event, each fill found booked already, and their events (trade_fill,
    position_update, balance_update) and position caches were never published. Only the
    publishing is retried now."""
    a, _ = funded_account(app.sessions, "5000")
    coids = [pending_order(app, a, f"p{n}") for n in range(2)]
    t = uuid.uuid4().hex[:8]
    published: list[int] = []

    class RedisDownTwice:
        def __init__(self) -> None:
            self.failures = 2

        def booked_many(self, bookings: Any) -> None:
            if self.failures:
                self.failures -= 1
                raise ConnectionError("Redis is restarting")
            bookings = list(bookings)
            published.append(len(bookings))
            app.notifier.booked_many(bookings)

        def order(self, view: dict[str, Any]) -> None:
            app.notifier.order(view)

    async def to_thread(fn: Any, *args: Any) -> Any:
        return fn(*args)

    async def no_wait(_: float) -> None:
        return None

    sink = FillSink(
        app.sessions, RedisDownTwice(), SystemClock(), to_thread=to_thread, sleep=no_wait
    )  # type: ignore[arg-type]

    async def main() -> None:
        for n, coid in enumerate(coids):
            sink.order_update(update(coid, f"p{n}", f"{t}-{n}"))
        runner = asyncio.create_task(sink.run())
        assert await sink.drain(5) == 0
        runner.cancel()

    asyncio.run(main())
    assert published == [2], "published once, both bookings together, after two refusals"
    assert (sink.booked, sink.duplicates) == (2, 0)
    assert [state(app, c)[2] for c in coids] == [[f"{t}-{n}"] for n in range(2)]


def test_a_lone_event_waits_for_the_ones_right_behind_it(app: App) -> None:
    a, _ = funded_account(app.sessions, "5000")
    coids = [pending_order(app, a, f"l{n}") for n in range(3)]
    t = uuid.uuid4().hex[:8]
    takes: list[int] = []
    lingered: list[float] = []

    class Counting(FillSink):
        def apply_batch(self, updates: list[OrderUpdate]) -> Any:
            takes.append(len(updates))
            return super().apply_batch(updates)

    async def to_thread(fn: Any, *args: Any) -> Any:
        return fn(*args)

    async def linger(seconds: float) -> None:  # the others arrive while the first waits
        lingered.append(seconds)
        for n in (1, 2):
            sink.order_update(update(coids[n], f"l{n}", f"{t}-{n}"))

    sink = Counting(
        app.sessions, app.notifier, SystemClock(), to_thread=to_thread, linger_s=0.02, sleep=linger
    )

    async def main() -> None:
        sink.order_update(update(coids[0], "l0", f"{t}-0"))
        runner = asyncio.create_task(sink.run())
        assert await sink.drain(5) == 0
        runner.cancel()

    asyncio.run(main())
    assert (takes, lingered, sink.booked) == ([3], [0.02], 3)
