"""Two `pms scheduler` processes: one leads, the standby takes over within seconds when the
leader is killed with SIGKILL, and no job slot is ever enqueued twice."""

from __future__ import annotations

import collections
import os
import signal
import subprocess
import sys
import time
import uuid

import orjson
import pytest
import redis

from pms.config import Settings
from tests.support import ROOT, wait_for

pytestmark = pytest.mark.slow


def start(env: dict[str, str]) -> subprocess.Popen[bytes]:
    return subprocess.Popen(
        [
            sys.executable,
            "-m",
            "pms.cli.main",
            "scheduler",
            "--order-sync-sec",
            "0.5",
            "--position-sync-sec",
            "1",
            "--lock-ttl-ms",
            "1500",
        ],
        cwd=ROOT,
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
    )


def enqueued(client: redis.Redis, namespace: str) -> list[dict]:
    return [orjson.loads(v) for v in client.hvals(f"{namespace}:pms.sync.msgs")]


def test_standby_takes_over_and_jobs_never_double_fire(
    settings: Settings, redis_client: redis.Redis
) -> None:
    namespace = f"sched-{uuid.uuid4().hex[:8]}"
    env = os.environ.copy() | {
        "PMS_DRAMATIQ_NAMESPACE": namespace,
        "PMS_REDIS_PREFIX": f"{settings.redis_prefix}{namespace}:",
    }
    lock_key = f"{settings.redis_prefix}{namespace}:pms:scheduler:leader"
    a, b = start(env), start(env)
    try:
        first = wait_for(lambda: redis_client.get(lock_key), 10, message="a leader")
        wait_for(lambda: len(enqueued(redis_client, namespace)) >= 4, 10, message="jobs enqueued")
        # Kill whichever process leads: find it by elimination (the other is standing by).
        leader = a
        a.send_signal(signal.SIGSTOP)
        time.sleep(0.1)
        paused_count = len(enqueued(redis_client, namespace))
        time.sleep(0.8)
        if len(enqueued(redis_client, namespace)) > paused_count:
            leader = b  # b kept firing while a was paused: b leads
        a.send_signal(signal.SIGCONT)
        os.killpg(leader.pid, signal.SIGKILL)
        leader.wait(5)
        killed_at = time.monotonic()
        wait_for(
            lambda: redis_client.get(lock_key) not in (None, first), 10, message="a new leader"
        )
        took_over = time.monotonic() - killed_at
        count = len(enqueued(redis_client, namespace))
        wait_for(
            lambda: len(enqueued(redis_client, namespace)) >= count + 2,
            10,
            message="jobs after the takeover",
        )
        assert took_over < 5, f"standby took {took_over:.1f}s"
        slots = collections.Counter(
            (m["actor_name"], m["args"][0]["slot"]) for m in enqueued(redis_client, namespace)
        )
        assert slots and max(slots.values()) == 1, (
            f"double-fired slots: {[s for s, n in slots.items() if n > 1]}"
        )
        assert {actor for actor, _ in slots} == {"sync_orders", "sync_positions", "settle_funding"}
    finally:
        for p in (a, b):
            if p.poll() is None:
                os.killpg(p.pid, signal.SIGKILL)
                p.wait(5)
        for key in redis_client.scan_iter(match=f"{namespace}*"):
            redis_client.delete(key)
