"""A Redis restart (or any outage longer than redis-py's retries) must not leave the
scheduler dead while its process stays alive: docs/operations.md promises a standby takes
over within the lock TTL, and the module docstring that a leader that loses its lock stands by.
Before the fix, a ConnectionError escaped run() and killed the thread of every instance.
"""

from __future__ import annotations

import contextlib
import threading
import time
import uuid

import redis

from pms.clock import SystemClock
from pms.config import Settings
from pms.scheduler.service import Job, SchedulerService


class FlakyRedis(redis.Redis):
    """A real client that raises what redis-py raises once its retries are exhausted."""

    down = False

    def execute_command(self, *args, **kwargs):  # type: ignore[no-untyped-def]
        if FlakyRedis.down:
            raise redis.ConnectionError("Error 111 connecting: Connection refused")
        return super().execute_command(*args, **kwargs)


def test_scheduler_survives_a_redis_outage(settings: Settings) -> None:
    ns = f"audit-sched-{uuid.uuid4().hex[:8]}"
    own = settings.model_copy(
        update={"dramatiq_namespace": ns, "redis_prefix": f"{settings.redis_prefix}{ns}:"}
    )
    plain = redis.Redis.from_url(own.redis_url)
    flaky = FlakyRedis.from_url(own.redis_url)
    leader = SchedulerService(
        own, flaky, SystemClock(), jobs=(Job("sync_orders", 0.3),), lock_ttl_ms=600
    )
    standby = SchedulerService(
        own, flaky, SystemClock(), jobs=(Job("sync_orders", 0.3),), lock_ttl_ms=600
    )
    threads = [threading.Thread(target=s.run, daemon=True) for s in (leader, standby)]
    try:
        threads[0].start()
        deadline = time.monotonic() + 5
        while plain.get(leader.lock.key) is None and time.monotonic() < deadline:
            time.sleep(0.05)
        threads[1].start()
        assert plain.get(leader.lock.key) is not None, "no leader before the outage"
        # Redis restarts (no persistence): both processes see connection errors for 1 s.
        FlakyRedis.down = True
        time.sleep(1.0)
        plain.delete(leader.lock.key)
        FlakyRedis.down = False
        deadline = time.monotonic() + 3
        while plain.get(leader.lock.key) is None and time.monotonic() < deadline:
            time.sleep(0.05)
        alive = [t.is_alive() for t in threads]
        assert plain.get(leader.lock.key) is not None, (
            f"no scheduler leads 3 s after Redis came back; run() threads alive: {alive}"
        )
    finally:
        FlakyRedis.down = False
        for s in (leader, standby):
            with contextlib.suppress(redis.RedisError):
                s.stop()
        for key in plain.scan_iter(match=f"{own.redis_prefix}*"):
            plain.delete(key)
        for key in plain.scan_iter(match=f"{ns}*"):
            plain.delete(key)
