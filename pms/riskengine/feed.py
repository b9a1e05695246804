"""Runs the risk monitor next to the market stream without ever blocking it.

The stream's event loop only hands marks over (``offer``: a dict update under a lock). A
dedicated thread takes everything that arrived since its last pass and runs one pass: under
a burst, marks are coalesced (the latest per symbol wins) so the risk pass never falls
behind. A second thread follows booking events and reloads the accounts they name.
"""

from __future__ import annotations

import threading
import time
from decimal import Decimal

import structlog

from pms.riskengine.monitor import RiskMonitor

log = structlog.get_logger(__name__)


class RiskFeed:
    def __init__(
        self, monitor: RiskMonitor, *, reload_every_s: float = 30.0, revisit_every_s: float = 1.0
    ) -> None:
        self.monitor = monitor
        self._pending: dict[str, Decimal] = {}
        self._cond = threading.Condition()
        self._stop = threading.Event()
        self._threads: list[threading.Thread] = []
        self._reload_every_s = reload_every_s
        self._revisit_every_s = revisit_every_s
        self.passes = 0

    def offer(self, symbol: str, mark: Decimal) -> None:
        with self._cond:
            self._pending[symbol] = mark
            self._cond.notify()

    def start(self) -> None:
        self.monitor.load_all()
        for name, target in (("risk-pass", self._passes), ("risk-changes", self._changes)):
            thread = threading.Thread(target=target, name=name, daemon=True)
            thread.start()
            self._threads.append(thread)
        log.info("risk monitor started", accounts=len(self.monitor.books))

    def _passes(self) -> None:
        last_reload = time.monotonic()
        while not self._stop.is_set():
            with self._cond:
                if not self._pending:
                    self._cond.wait(self._revisit_every_s)
                marks, self._pending = self._pending, {}
            if self._stop.is_set():
                break
            try:
                if marks:
                    self.monitor.on_marks(marks)
                    self.passes += 1
                else:
                    # Quiet: keep pushing accounts that are still in an ADL or liquidation
                    # tier, and now and then pick up accounts that appeared without an event.
                    self.monitor.revisit()
                    if time.monotonic() - last_reload >= self._reload_every_s:
                        self.monitor.load_all()
                        last_reload = time.monotonic()
            except Exception:  # a pass must never kill the thread: log and go on
                log.exception("risk pass failed")

    def _changes(self) -> None:
        while not self._stop.is_set():
            try:
                self.monitor.follow_changes(self._stop)
            except Exception:
                log.exception("risk change feed failed; reconnecting")
                self._stop.wait(1.0)

    def stop(self) -> None:
        self._stop.set()
        with self._cond:
            self._cond.notify_all()
        for thread in self._threads:
            thread.join(5)
