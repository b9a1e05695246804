"""A leader that stalls for a little over a second across a due time (CPU starvation on a
busy host, VM steal, swap, SIGSTOP) loses that whole period: jobs are added with
APScheduler's default ``misfire_grace_time`` of 1 s, so the late run is dropped ("Run time
of job … was missed by"), not run late, and the next one is a full interval away."""

from __future__ import annotations

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


def test_a_run_due_during_a_short_stall_is_run_late_not_dropped(
    settings: Settings, redis_client: redis.Redis
) -> None:
    namespace = f"sched-misfire-{uuid.uuid4().hex[:8]}"
    env = os.environ.copy() | {
        "PMS_DRAMATIQ_NAMESPACE": namespace,
        "PMS_REDIS_PREFIX": f"{settings.redis_prefix}{namespace}:",
    }
    argv = [
        sys.executable,
        "-m",
        "pms.cli.main",
        "scheduler",
        "--order-sync-sec",
        "4",
        "--position-sync-sec",
        "1000",
        "--funding-sec",
        "1000",
        "--lock-ttl-ms",
        "30000",
    ]
    proc = subprocess.Popen(
        argv,
        cwd=ROOT,
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
    )

    def order_syncs() -> list[dict]:
        msgs = [orjson.loads(v) for v in redis_client.hvals(f"{namespace}:pms.sync.msgs")]
        return [m for m in msgs if m["actor_name"] == "sync_orders"]

    try:
        first = wait_for(order_syncs, 30, interval=0.01, message="the leader's first run")[0]
        started_s = first["message_timestamp"] / 1000  # next run due at started_s + 4
        os.killpg(proc.pid, signal.SIGSTOP)
        time.sleep(max(0.0, started_s + 5.6 - time.time()))  # resume 1.6 s after it was due
        os.killpg(proc.pid, signal.SIGCONT)
        time.sleep(max(0.0, started_s + 7.4 - time.time()))  # before the following run (+8)
        runs = order_syncs()
        assert len(runs) >= 2, "the order-sync due during a 1.6 s stall was dropped"
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGCONT)
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(5)
        for key in redis_client.scan_iter(match=f"*{namespace}*"):
            redis_client.delete(key)
