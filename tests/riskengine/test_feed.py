"""The feed's schedule, on a stand-in monitor and an injected clock: accounts in an ADL or
liquidation tier are revisited once a second and every book is reloaded now and then, whatever
the marks of other symbols do; the change feed re-reads every book each time it subscribes, so
what was booked while it was not listening is not lost."""

from __future__ import annotations

import threading
from collections.abc import Callable, Mapping
from decimal import Decimal

from pms.riskengine.feed import RiskFeed

D = Decimal
ETH = "ETH/USDT:USDT"
TICK_S = 0.0625  # ETH's mark ticks every 62.5 ms (exact in binary: no drift in the sums)


class FakeTime:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


class MarksFlow:
    """A monitor that records what the feed asks of it. While the feed runs, ETH's mark
    ticks every ``TICK_S`` of injected time (the next tick is offered as each pass ends, so
    the pass thread never waits); the feed is stopped after ``ticks`` of them."""

    def __init__(self, clock: FakeTime, ticks: int) -> None:
        self.clock = clock
        self.ticks = ticks
        self.feed: RiskFeed | None = None
        self.books: dict[int, object] = {}
        self.passes = self.revisits = self.loads = 0

    def load_all(self) -> int:
        self.loads += 1
        return 0

    def on_marks(self, marks: Mapping[str, Decimal]) -> int:
        assert self.feed is not None
        self.passes += 1
        self.clock.now += TICK_S
        if self.passes == self.ticks:
            self.feed._stop.set()
        else:
            self.feed.offer(ETH, marks[ETH] + 1)
        return 0

    def revisit(self) -> int:
        self.revisits += 1
        return 0


def run_marks(seconds: float, **schedule: float) -> MarksFlow:
    clock = FakeTime()
    monitor = MarksFlow(clock, int(seconds / TICK_S))
    feed = monitor.feed = RiskFeed(monitor, monotonic=clock, **schedule)  # type: ignore[arg-type]
    feed.offer(ETH, D(3000))
    feed._passes()  # the pass thread's loop, here in the test's thread
    return monitor


def test_adl_accounts_are_revisited_while_other_symbols_marks_flow() -> None:
    """An account in LIQUIDATION holds only SOL, whose mark does not move, while ETH's mark
    ticks 16 times a second: its enforcement must still be asked again once a second (a retryable
    failure left its event PENDING; only the next enforcement resumes it)."""
    monitor = run_marks(10.0, revisit_every_s=1.0)
    assert monitor.passes == 160
    assert monitor.revisits == 10


def test_books_are_reloaded_periodically_while_marks_flow() -> None:
    """The periodic reload (accounts that appeared without an event) keeps its schedule
    under mark traffic too."""
    monitor = run_marks(10.0, reload_every_s=3.0)
    assert monitor.passes == 160
    assert monitor.loads == 3


class DroppingChangeFeed:
    """A change feed whose pub/sub connection drops once (Redis restarted, a network blip):
    booking events published until it subscribes again are lost."""

    def __init__(self) -> None:
        self.books: dict[int, object] = {}
        self.log: list[str] = []

    def load_all(self) -> int:
        self.log.append("load_all")
        return 0

    def follow_changes(
        self, stop: threading.Event, on_subscribed: Callable[[], object] | None = None
    ) -> None:
        self.log.append("subscribed")
        if on_subscribed is not None:
            on_subscribed()
        if self.log.count("subscribed") == 1:
            self.log.append("dropped")
            raise ConnectionError("pubsub connection lost")
        stop.set()  # the test ends here


def test_change_feed_reloads_the_books_after_it_resubscribes() -> None:
    """A fill booked while the change feed was down reaches the monitor's books as soon as
    the feed is back, not at the next periodic reload (here never)."""
    monitor = DroppingChangeFeed()
    feed = RiskFeed(monitor, reload_every_s=3600, reconnect_after_s=0)  # type: ignore[arg-type]
    feed._changes()  # the change thread's loop, here in the test's thread
    assert monitor.log == ["subscribed", "load_all", "dropped", "subscribed", "load_all"]
