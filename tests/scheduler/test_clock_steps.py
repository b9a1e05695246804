"""Slots come from the wall clock (the injected one); markers live for ``10 × interval``.
A wall clock stepped back (NTP correction, VM resume) lands every firing in a slot whose
marker is still there, so the job is silently skipped for as long as the step."""

from __future__ import annotations

import contextlib
from datetime import UTC, datetime

import redis

from pms.clock import TestClock
from pms.config import Settings
from pms.scheduler.service import Job, SchedulerService

FUNDING = Job("settle_funding", 300)


def test_a_clock_stepped_back_does_not_suppress_the_job(own: Settings) -> None:
    clock = TestClock(datetime(2026, 1, 1, 8, 0, 1, tzinfo=UTC))
    client = redis.Redis.from_url(own.redis_url)
    service = SchedulerService(own, client, clock, jobs=(FUNDING,))
    try:
        # Arrange: funding settles every 5 minutes for 20 minutes.
        for _ in range(5):
            assert service.fire(FUNDING)
            clock.advance(300)
        # Act: the host clock was 25 minutes fast; NTP steps it back. From here on, the
        # scheduler fires every 5 minutes again as before.
        clock.advance(-1500)
        ran = []
        for _ in range(4):
            clock.advance(300)
            ran.append(service.fire(FUNDING))
        # Assert: 20 more minutes of real time, and funding settled at least once in them.
        assert any(ran), (
            f"settle_funding skipped for 20 minutes after a 25-minute clock step back: {ran}"
        )
    finally:
        with contextlib.suppress(redis.RedisError):
            service.stop()
        client.close()


def test_the_running_scheduler_keeps_firing_after_the_wall_clock_steps_back(
    own: Settings,
) -> None:
    """The same step seen end to end: APScheduler keeps its next run time on the wall clock
    (it is not given the injected clock), so after a step back it waits out the step before
    firing again, and the slot markers would skip those firings anyway. Time is moved with
    freezegun (ticking), the scheduler runs for real against Redis."""
    import threading
    import time
    from datetime import timedelta

    from freezegun import freeze_time

    from pms.clock import SystemClock
    from tests.support import wait_for

    client = redis.Redis.from_url(own.redis_url)
    with freeze_time(datetime.now(UTC), tick=True) as frozen:
        service = SchedulerService(
            own, client, SystemClock(), jobs=(Job("sync_orders", 1),), lock_ttl_ms=3000
        )
        runner = threading.Thread(target=service.run, daemon=True)
        runner.start()
        try:
            wait_for(lambda: len(service.fired) >= 3, 10, message="three firings")
            frozen.move_to(datetime.now(UTC) - timedelta(seconds=60))  # NTP steps back 1 min
            before = len(service.fired)
            time.sleep(4)  # real seconds: four intervals of the job
            after = len(service.fired) - before
            assert after >= 2, f"sync_orders fired {after} times in 4 s after a 1-minute step back"
        finally:
            with contextlib.suppress(redis.RedisError):
                service.stop()
            runner.join(5)
            client.close()
