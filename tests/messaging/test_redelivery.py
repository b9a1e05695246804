"""kill -9 of a worker mid-command: the command is redelivered and completes once, < 10 s."""

from __future__ import annotations

import os
import signal
import subprocess
import time

import pytest
import redis

from pms.config import Settings
from pms.messaging import wire

from .conftest import ROOT, subprocess_env

PMS = os.path.join(ROOT, ".venv", "bin", "pms")


def start_worker(settings: Settings) -> subprocess.Popen[bytes]:
    return subprocess.Popen(
        [
            PMS,
            "worker",
            "--processes",
            "1",
            "--threads",
            "2",
            "--module",
            "tests.messaging.kill_actors",
        ],
        cwd=ROOT,
        env=subprocess_env(settings),
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,  # its own process group: SIGKILL master and children at once
    )


def stop(proc: subprocess.Popen[bytes]) -> None:
    """SIGTERM (graceful); a worker still busy after 20 s (a hung job) gets SIGKILL."""
    if proc.poll() is not None:
        return
    os.kill(proc.pid, signal.SIGTERM)
    try:
        proc.wait(timeout=20)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait(timeout=5)


def wait_until(predicate, timeout: float, step: float = 0.02) -> float:  # type: ignore[no-untyped-def]
    start = time.monotonic()
    while not predicate():
        if time.monotonic() - start > timeout:
            raise AssertionError("timed out")
        time.sleep(step)
    return time.monotonic() - start


@pytest.mark.slow
def test_sigkilled_worker_command_is_redelivered_within_10s_and_completes_once(
    msg_settings: Settings, rclient: redis.Redis
) -> None:
    """As in production, the fleet keeps running when one worker dies: two workers, and the
    one that started the command is SIGKILLed (master and children); the other redelivers it
    (the clock does not include booting a replacement)."""
    key = msg_settings.key
    ns = msg_settings.dramatiq_namespace
    workers = [start_worker(msg_settings) for _ in range(2)]
    try:
        # Both consumers up (each worker's process heartbeats once it runs).
        wait_until(lambda: rclient.zcard(f"{ns}:__heartbeats__") >= 2, timeout=60)
        wire.send(
            rclient,
            ns,
            "slow_job",
            {"requestId": "job-1"},
            timestamp_ms=int(time.time() * 1000),
            queue_name="pms.trading",
        )
        wait_until(lambda: rclient.llen(key("test:started:job-1")) == 1, timeout=30)
        group = int(rclient.get(key("test:group:job-1")) or 0)
        victim = next(p for p in workers if p.pid == group)

        os.killpg(group, signal.SIGKILL)
        killed_at = time.monotonic()
        victim.wait(timeout=5)

        wait_until(lambda: rclient.llen(key("test:done:job-1")) >= 1, timeout=30)
        redelivered_in = time.monotonic() - killed_at
        print(f"redelivered and completed {redelivered_in:.2f} s after SIGKILL")
        assert redelivered_in < 10

        time.sleep(1.5)  # more maintenance sweeps: nothing runs it again
        assert rclient.lrange(key("test:done:job-1"), 0, -1) == [b"2"]
        assert rclient.lrange(key("test:started:job-1"), 0, -1) == [b"1", b"2"]
        assert rclient.hlen(f"{ns}:pms.trading.msgs") == 0  # acked
    finally:
        for proc in workers:
            stop(proc)


@pytest.mark.slow
def test_pms_worker_shuts_down_gracefully_on_sigterm(
    msg_settings: Settings, rclient: redis.Redis
) -> None:
    proc = start_worker(msg_settings)
    ns = msg_settings.dramatiq_namespace
    wait_until(lambda: rclient.zcard(f"{ns}:__heartbeats__") >= 1, timeout=30)
    # A supervisor signals the master only; it forwards SIGTERM to its worker processes.
    os.kill(proc.pid, signal.SIGTERM)
    assert proc.wait(timeout=15) == 0
