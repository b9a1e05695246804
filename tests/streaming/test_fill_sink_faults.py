"""The fill sink under events it cannot apply, amendments inside a take, and shutdown.

- A fill whose values are not a fill (``l`` = 0) used to be parsed, fail its booking on every
  retry and hold every later event back for good; now the parser refuses it (the stream
  reconnects and order-sync books it from REST), and an event that fails for any reason
  other than an unreachable database is set aside after a few attempts.
- An order amended up and then partly filled, both in one take: the fills are booked before
  the fill-less events, so the fill beyond the old quantity marked the order FILLED while
  0.001 was still working. The trade's ``q`` (the order's quantity as of the fill) is taken.
- At shutdown the booker was cancelled while a take was in its thread: the take committed,
  its events were never published.
"""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import Callable
from decimal import Decimal
from typing import Any

import orjson
import pytest
from sqlalchemy import select
from sqlalchemy.exc import OperationalError

from pms.app import App
from pms.clock import SystemClock
from pms.db.models import Order
from pms.db.session import unit_of_work
from pms.streaming.fills import SET_ASIDE_AFTER, FillSink
from pms.streaming.status import StreamHealth
from pms.streaming.userdata import OrderUpdate, UserStream, parse_order_trade_update
from tests.factories import funded_account
from tests.streaming.test_fills import pending_order, state, update


def _frame(coid: str, order_id: str, trade_id: int, **o: Any) -> bytes:
    fields = {
        "s": "BTCUSDT", "c": coid, "S": "BUY", "o": "LIMIT", "f": "GTC", "q": "0.002",
        "p": "59000", "ap": "59000", "sp": "0", "x": "TRADE", "X": "PARTIALLY_FILLED",
        "i": order_id, "l": "0.002", "z": "0.002", "L": "59000", "n": "0.01", "N": "USDT",
        "T": 1767225600000, "t": trade_id, "m": False, "R": False, "ps": "BOTH",
    } | o  # fmt: skip
    return orjson.dumps(
        {"e": "ORDER_TRADE_UPDATE", "E": 1767225600000, "T": 1767225600000, "o": fields}
    )


async def _inline(fn: Any, *args: Any) -> Any:
    return fn(*args)


def _run(sink: FillSink, feed: Callable[[], None], drain_s: float = 3.0) -> int:
    async def main() -> int:
        feed()
        runner = asyncio.create_task(sink.run())
        left = await sink.drain(drain_s)
        runner.cancel()
        return left

    return asyncio.run(main())


@pytest.mark.parametrize(
    "bad",
    [
        {"l": "0"},
        {"L": "0"},
        {"l": "-0.001"},
        {"l": "NaN"},
        {"n": "Infinity"},
        {"N": "AVERYLONGASSET"},
        {"z": "-1"},
    ],
)
def test_a_fill_that_is_not_one_is_refused_by_the_parser(bad: dict[str, str]) -> None:
    with pytest.raises(ValueError):
        parse_order_trade_update(orjson.loads(_frame("pms-x", "1", 1, **bad)))


def test_a_malformed_fill_on_the_stream_does_not_hold_the_next_one_back(app: App) -> None:
    a, _ = funded_account(app.sessions, "5000")
    bad = pending_order(app, a, "wb1")
    good = pending_order(app, a, "wg1")
    t = int(uuid.uuid4().int % 10**12)
    sink = FillSink(app.sessions, app.notifier, SystemClock(), to_thread=_inline)
    stream = UserStream("ws://unused", None, sink, StreamHealth("user"), clock=None)  # type: ignore[arg-type]

    def feed() -> None:
        with pytest.raises(ValueError):  # refused: the stream reconnects, order-sync books it
            stream.on_message(_frame(bad, "wb1", t, l="0", z="0"), 1)
        stream.on_message(_frame(good, "wg1", t + 1, X="FILLED"), 2)

    assert _run(sink, feed) == 0
    assert state(app, good)[2] == [str(t + 1)]


def test_an_event_that_keeps_failing_is_set_aside_and_the_rest_go_on(app: App) -> None:
    a, _ = funded_account(app.sessions, "5000")
    poison = pending_order(app, a, "ps1")
    good = pending_order(app, a, "pg1")
    tid = uuid.uuid4().hex[:10]
    attempts: list[str] = []

    class Sink(FillSink):
        def apply_batch(self, updates: list[OrderUpdate]) -> Any:
            if any(u.client_order_id == poison for u in updates):
                attempts.append(poison)
                raise ValueError("a bug, or data no retry will change")
            return super().apply_batch(updates)

    async def no_wait(_: float) -> None:
        return None

    sink = Sink(app.sessions, app.notifier, SystemClock(), to_thread=_inline, sleep=no_wait)

    def feed() -> None:
        sink.order_update(update(poison, "ps1", f"{tid}-p"))
        sink.order_update(update(good, "pg1", f"{tid}-g"))

    assert _run(sink, feed) == 0
    assert state(app, good)[2] == [f"{tid}-g"]
    assert state(app, poison)[2] == []  # left for order-sync
    assert len(attempts) == 1 + SET_ASIDE_AFTER  # the take, then each attempt on its own


def test_an_unreachable_database_is_waited_for_not_set_aside(app: App) -> None:
    a, _ = funded_account(app.sessions, "5000")
    coid = pending_order(app, a, "ur1")
    tid = uuid.uuid4().hex[:10]
    outage = iter(range(2 * SET_ASIDE_AFTER + 1))

    class Sink(FillSink):
        def apply_batch(self, updates: list[OrderUpdate]) -> Any:
            if next(outage, None) is not None:
                raise OperationalError("SELECT 1", {}, ConnectionRefusedError("restarting"))
            return super().apply_batch(updates)

    async def no_wait(_: float) -> None:
        return None

    sink = Sink(app.sessions, app.notifier, SystemClock(), to_thread=_inline, sleep=no_wait)
    assert _run(sink, lambda: sink.order_update(update(coid, "ur1", tid))) == 0
    assert state(app, coid)[2] == [tid]


def test_amended_up_then_partly_filled_in_one_take_stays_open(app: App) -> None:
    """Order of 0.002 amended to 0.004, then 0.003 fills: both events in one take."""
    a, _ = funded_account(app.sessions, "5000")
    coid = pending_order(app, a, "am1")
    tid = int(uuid.uuid4().int % 10**12)
    amendment = parse_order_trade_update(
        orjson.loads(_frame(coid, "am1", 0, x="AMENDMENT", X="NEW", q="0.004", l="0", z="0"))
    )
    fill = parse_order_trade_update(
        orjson.loads(_frame(coid, "am1", tid, q="0.004", l="0.003", z="0.003"))
    )
    FillSink(app.sessions, app.notifier, SystemClock()).handle_batch([amendment, fill])
    with unit_of_work(app.sessions) as s:
        order = s.execute(select(Order).where(Order.client_order_id == coid)).scalar_one()
        got = (order.status, order.qty, order.filled_qty)
    assert got == ("PARTIALLY_FILLED", Decimal("0.004"), Decimal("0.003"))


def test_a_take_in_flight_at_shutdown_is_committed_and_published(app: App) -> None:
    a, _ = funded_account(app.sessions, "5000")
    coid = pending_order(app, a, "sd1")
    tid = f"{uuid.uuid4().hex[:8]}-sd"
    published: list[int] = []

    class Recording:
        def booked_many(self, bookings: Any) -> None:
            bookings = list(bookings)
            published.append(len(bookings))
            app.notifier.booked_many(bookings)

        def order(self, view: dict[str, Any]) -> None:
            app.notifier.order(view)

    async def slow_to_thread(fn: Any, *args: Any) -> Any:
        def run() -> Any:
            if getattr(fn, "__name__", "") == "apply_batch":
                time.sleep(0.6)  # the take waits on a row lock (a busy account)
            return fn(*args)

        return await asyncio.to_thread(run)

    sink = FillSink(app.sessions, Recording(), SystemClock(), to_thread=slow_to_thread)  # type: ignore[arg-type]

    async def main() -> None:
        sink.order_update(update(coid, "sd1", tid))
        booker = asyncio.create_task(sink.run())
        await asyncio.sleep(0.05)
        await sink.close(drain_s=0.2)  # what the streamer does on stop, then it cancels
        booker.cancel()
        await asyncio.gather(booker, return_exceptions=True)

    asyncio.run(main())
    assert state(app, coid)[2] == [tid]
    assert published == [1]
