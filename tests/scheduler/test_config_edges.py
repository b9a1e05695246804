"""Scheduler settings from the command line are outside input, and a failure in the leader
loop must not leave a process that holds the lock and runs nothing.

Before: ``--lock-ttl-ms 0`` spun on Redis at 100 % CPU (``SET … PX 0`` is an error, retried
after ``ttl / 3000 = 0`` s); ``--funding-sec 0`` divided by zero in the leader's first firing
and killed its thread (lock held, APScheduler still firing the other jobs); a negative interval
sent APScheduler's ``while next <= now`` loop on until memory ran out.
"""

from __future__ import annotations

import contextlib
import math
import os
import subprocess
import sys
import threading

import pytest
import redis

from pms.clock import SystemClock
from pms.config import Settings
from pms.scheduler.service import Job, SchedulerService
from tests.support import ROOT, wait_for


@pytest.mark.parametrize("interval", [0, -5, 0.01, math.nan, math.inf, 30 * 24 * 3600])
def test_an_interval_out_of_bounds_is_refused(interval: float) -> None:
    with pytest.raises(ValueError, match="interval"):
        Job("sync_orders", interval)


@pytest.mark.parametrize("ttl_ms", [0, -1, 299])
def test_a_lock_ttl_too_short_is_refused(own: Settings, ttl_ms: int) -> None:
    client = redis.Redis.from_url(own.redis_url)
    try:
        with pytest.raises(ValueError, match="lock TTL"):
            SchedulerService(own, client, SystemClock(), lock_ttl_ms=ttl_ms)
    finally:
        client.close()


@pytest.mark.parametrize(
    "flags", [["--funding-sec", "0"], ["--order-sync-sec", "-5"], ["--lock-ttl-ms", "0"]]
)
def test_the_cli_refuses_them_with_a_message(own: Settings, flags: list[str]) -> None:
    env = os.environ | {
        "PMS_REDIS_PREFIX": own.redis_prefix,
        "PMS_DRAMATIQ_NAMESPACE": own.dramatiq_namespace,
    }
    done = subprocess.run(
        [sys.executable, "-m", "pms.cli.main", "scheduler", *flags],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 2, done.stderr[-500:]
    assert done.stderr.startswith("pms scheduler: ") and "Traceback" not in done.stderr


def test_a_failing_leader_steps_down_and_releases_the_lock(own: Settings) -> None:
    """Any failure of the leader loop (not only Redis's): it steps down and lets the lock go,
    then leads again, instead of dying with the lock held."""
    plain = redis.Redis.from_url(own.redis_url)
    client = redis.Redis.from_url(own.redis_url)
    service = SchedulerService(
        own, client, SystemClock(), jobs=(Job("sync_orders", 0.3),), lock_ttl_ms=600
    )
    real_fire = service.fire
    failures = iter([RuntimeError("a bug in a job")])

    def fire(job: Job) -> bool:
        failure = next(failures, None)
        if failure is not None:
            raise failure
        return real_fire(job)

    service.fire = fire  # type: ignore[method-assign]
    runner = threading.Thread(target=service.run, daemon=True)
    runner.start()
    try:
        wait_for(lambda: service.fired, 10, message="leading again after the failure")
        assert runner.is_alive()
        assert plain.get(service.lock.key) == service.lock.token.encode()
    finally:
        with contextlib.suppress(redis.RedisError):
            service.stop()
        runner.join(5)
        plain.close()
        client.close()
