"""Runs the risk monitor next to the market stream without ever blocking it.

The stream's event loop only hands marks over (``offer``: a dict update under a lock). A
dedicated thread takes everything that arrived since its last pass and runs one pass: under
a burst, marks are coalesced (the latest per symbol wins) so the risk pass never falls
behind. The same thread revisits the accounts in an ADL or liquidation tier every
``revisit_every_s`` and reloads every book every ``reload_every_s``, each on its own schedule
whatever the mark traffic. A second thread follows booking events and reloads the accounts
they name, and reloads every book each time it (re)subscribes: events published while it was
not listening are lost.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from decimal import Decimal

import structlog

from pms.riskengine.monitor import RiskMonitor

log = structlog.get_logger(__name__)


class RiskFeed:
    def __init__(
        self,
        monitor: RiskMonitor,
        *,
        reload_every_s: float = 30.0,
        revisit_every_s: float = 1.0,
        reconnect_after_s: float = 1.0,
        monotonic: Callable[[], float] = time.monotonic,
    ) -> None:
        self.monitor = monitor
        self._pending: dict[str, Decimal] = {}
        self._cond = threading.Condition()
        self._stop = threading.Event()
        self._threads: list[threading.Thread] = []
        self._reload_every_s = reload_every_s
        self._revisit_every_s = revisit_every_s
        self._reconnect_after_s = reconnect_after_s
        self._monotonic = monotonic
        now = monotonic()
        self._revisit_due = now + revisit_every_s
        self._reload_due = now + reload_every_s
        self.passes = 0

    def offer(self, symbol: str, mark: Decimal) -> None:
        with self._cond:
            self._pending[symbol] = mark
            self._cond.notify()

    def start(self) -> None:
        self.monitor.load_all()
        self._reload_due = self._monotonic() + self._reload_every_s
        for name, target in (("risk-pass", self._passes), ("risk-changes", self._changes)):
            thread = threading.Thread(target=target, name=name, daemon=True)
            thread.start()
            self._threads.append(thread)
        log.info("risk monitor started", accounts=len(self.monitor.books))

    def _passes(self) -> None:
        while not self._stop.is_set():
            with self._cond:
                if not self._pending:
                    due_in = self._revisit_due - self._monotonic()
                    self._cond.wait(min(max(due_in, 0.0), self._revisit_every_s))
                marks, self._pending = self._pending, {}
            if self._stop.is_set():
                break
            self._pass(marks)

    def _pass(self, marks: dict[str, Decimal]) -> None:
        """One pass: the marks that arrived, then whatever periodic work is due. Revisits and
        reloads keep their own schedule: with marks of some symbol arriving more often than
        ``revisit_every_s`` (markPrice@1s for every streamed symbol), an account in ADL or
        liquidation whose own mark does not move must still be pushed once a second."""
        # Each step is guarded on its own: a pass must never kill the thread, and one step
        # failing must not starve the others.
        if marks:
            try:
                self.monitor.on_marks(marks)
                self.passes += 1
            except Exception:
                log.exception("risk pass failed")
        now = self._monotonic()
        if now >= self._revisit_due:
            # Keep pushing accounts that are still in an ADL or liquidation tier.
            self._revisit_due = now + self._revisit_every_s
            try:
                self.monitor.revisit()
            except Exception:
                log.exception("risk revisit failed")
        if now >= self._reload_due:
            # Now and then pick up what no event announced (an account created meanwhile).
            self._reload_due = now + self._reload_every_s
            try:
                self.monitor.load_all()
            except Exception:
                log.exception("risk reload failed")

    def _changes(self) -> None:
        while not self._stop.is_set():
            try:
                # Once subscribed, re-read every book: what was booked while the feed was not
                # listening (before the first subscription, or a dropped connection) is
                # announced by no event that will still arrive.
                self.monitor.follow_changes(self._stop, on_subscribed=self.monitor.load_all)
            except Exception:
                log.exception("risk change feed failed; reconnecting")
                self._stop.wait(self._reconnect_after_s)

    def stop(self) -> None:
        self._stop.set()
        with self._cond:
            self._cond.notify_all()
        for thread in self._threads:
            thread.join(5)
