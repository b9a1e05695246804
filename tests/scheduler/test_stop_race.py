"""``stop()`` racing the standby loop: SIGTERM arrives while the instance is between the
``_stop.is_set()`` check and ``acquire()``. ``stop()`` releases nothing (nothing held yet),
then the acquire succeeds: the stopped instance becomes leader, fires every job, and exits
still holding the lock, so the real standby waits a full TTL for an orderly shutdown."""

from __future__ import annotations

import contextlib
import threading

import redis

from pms.clock import SystemClock
from pms.config import Settings
from pms.scheduler.service import Job, SchedulerService


class StopDuringAcquire(redis.Redis):
    service: SchedulerService | None = None

    def set(self, name, value, *args, **kwargs):  # type: ignore[no-untyped-def, override]
        service = StopDuringAcquire.service
        if service is not None and kwargs.get("nx") and name == service.lock.key:
            StopDuringAcquire.service = None
            service.stop()  # the SIGTERM handler runs here, on the main thread in real life
        return super().set(name, value, *args, **kwargs)


def test_a_stop_during_acquire_leaves_no_lock_and_fires_nothing(own: Settings) -> None:
    plain = redis.Redis.from_url(own.redis_url)
    client = StopDuringAcquire.from_url(own.redis_url)
    service = SchedulerService(
        own, client, SystemClock(), jobs=(Job("sync_orders", 30),), lock_ttl_ms=60_000
    )
    StopDuringAcquire.service = service
    runner = threading.Thread(target=service.run, daemon=True)
    runner.start()
    runner.join(10)
    try:
        assert not runner.is_alive()
        assert service.fired == [], f"a stopped scheduler enqueued {service.fired}"
        assert plain.get(service.lock.key) is None, "a stopped scheduler still holds the lock"
    finally:
        with contextlib.suppress(redis.RedisError):
            service.lock.release()
        plain.close()
        client.close()
