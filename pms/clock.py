"""Time as a parameter: an injected clock, UTC-aware, never a global."""

from __future__ import annotations

import threading
import time
from datetime import UTC, datetime, timedelta
from typing import Protocol


class Clock(Protocol):
    def now(self) -> datetime:
        """The current time, UTC-aware."""

    def ms(self) -> int:
        """Milliseconds since the epoch."""


class SystemClock:
    def now(self) -> datetime:
        return datetime.now(UTC)

    def ms(self) -> int:
        return time.time_ns() // 1_000_000


class TestClock:
    """A clock that only moves when told to (tests, the simulator's deterministic mode)."""

    __test__ = False  # not a pytest test class

    def __init__(self, start: datetime | None = None) -> None:
        start = start or datetime(2026, 1, 1, tzinfo=UTC)
        if start.tzinfo is None:
            raise ValueError("TestClock needs a timezone-aware start")
        self._now = start
        self._lock = threading.Lock()

    def now(self) -> datetime:
        with self._lock:
            return self._now

    def ms(self) -> int:
        return int(self.now().timestamp() * 1000)

    def advance(self, seconds: float = 0, *, ms: int = 0) -> datetime:
        with self._lock:
            self._now += timedelta(seconds=seconds, milliseconds=ms)
            return self._now

    def set(self, when: datetime) -> None:
        if when.tzinfo is None:
            raise ValueError("TestClock needs timezone-aware datetimes")
        with self._lock:
            self._now = when
