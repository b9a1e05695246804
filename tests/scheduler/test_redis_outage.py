"""A Redis restart (or any outage longer than redis-py's retries) must not leave the
scheduler dead while its process stays alive: docs/operations.md promises a standby takes
over within the lock TTL, and the module docstring that a leader that loses its lock stands by.
Before the fix, a ConnectionError escaped run() and killed the thread of every instance.
"""

from __future__ import annotations

import contextlib
import threading
import uuid

import redis

from pms.clock import SystemClock
from pms.config import Settings
from pms.scheduler.service import Job, SchedulerService
from tests.support import wait_for


class FlakyRedis(redis.Redis):
    """A real client that raises what redis-py raises once its retries are exhausted."""

    down = False
    refused = 0

    def execute_command(self, *args, **kwargs):  # type: ignore[no-untyped-def]
        if FlakyRedis.down:
            FlakyRedis.refused += 1
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
        wait_for(lambda: plain.get(leader.lock.key), 5, message="a leader before the outage")
        threads[1].start()
        # Redis restarts (no persistence): both instances meet connection errors (the
        # leader's renew and the standby's acquire, each every 200 ms), then the lock is gone.
        FlakyRedis.refused = 0
        FlakyRedis.down = True
        wait_for(lambda: FlakyRedis.refused >= 6, 10, message="both instances hit the outage")
        plain.delete(leader.lock.key)
        FlakyRedis.down = False

        wait_for(lambda: plain.get(leader.lock.key), 3, message="a leader after the outage")
        assert all(t.is_alive() for t in threads)
    finally:
        FlakyRedis.down = False
        for s in (leader, standby):
            with contextlib.suppress(redis.RedisError):
                s.stop()
        for key in plain.scan_iter(match=f"{own.redis_prefix}*"):
            plain.delete(key)
        for key in plain.scan_iter(match=f"{ns}*"):
            plain.delete(key)
        plain.close()
        flaky.close()
