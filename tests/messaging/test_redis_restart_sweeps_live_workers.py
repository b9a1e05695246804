"""After a Redis restart (or any outage) longer than ``heartbeat_timeout_ms`` (5 s), every
broker's heartbeat is stale. The first process whose ``maintain()`` ran after the restart
treated every *live* worker as dead: it re-queues their in-flight (and prefetched) messages,
deletes their ack sets and forgets their heartbeats, so each message in flight during the
outage ran a second time, concurrently with the original. Now a process that finds its own
heartbeat stale sweeps nothing. Runs a private, persistent
redis-server (AOF) so the restart is real and the shared Redis is untouched."""

from __future__ import annotations

import shutil
import socket
import subprocess
import time
from pathlib import Path

import pytest
import redis

from pms.config import load_settings
from pms.messaging import wire
from pms.messaging.broker import build_broker

QUEUE = "pms.trading"
HEARTBEAT_MS = 500


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _start(port: int, data: Path) -> subprocess.Popen[bytes]:
    proc = subprocess.Popen(
        [
            "redis-server",
            "--port",
            str(port),
            "--bind",
            "127.0.0.1",
            "--dir",
            str(data),
            "--appendonly",
            "yes",
            "--appendfsync",
            "always",
            "--save",
            "",
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    client = redis.Redis(port=port)
    for _ in range(100):
        try:
            client.ping()
            return proc
        except redis.ConnectionError:
            time.sleep(0.05)
    raise RuntimeError("private redis-server did not start")


@pytest.mark.skipif(shutil.which("redis-server") is None, reason="no redis-server")
def test_a_redis_restart_does_not_redeliver_live_workers_messages(tmp_path: Path) -> None:
    port = _free_port()
    server = _start(port, tmp_path)
    settings = load_settings(
        redis_url=f"redis://127.0.0.1:{port}/0",
        redis_prefix="restart:",
        dramatiq_namespace="restart-ns",
    )
    # A short heartbeat timeout: the outage below outlasts it without a 6 s wait.
    a = build_broker(settings, heartbeat_timeout_ms=HEARTBEAT_MS)  # nothing in flight
    b = build_broker(settings, heartbeat_timeout_ms=HEARTBEAT_MS)  # running one command
    for broker in (a, b):
        for q in wire.QUEUES:
            broker.declare_queue(q)
    admin = redis.Redis(port=port)
    try:
        wire.send(
            admin,
            "restart-ns",
            "place_market_order",
            {"requestId": "r1"},
            timestamp_ms=int(time.time() * 1000),
        )
        consumer = b.consume(QUEUE, prefetch=4, timeout=100)
        held = None
        while held is None:
            held = next(consumer)  # b runs it (maintain() heartbeated b first)
        a.maintain(force=True)
        assert admin.zcard("restart-ns:__heartbeats__") == 2

        # Redis restarts (AOF kept) and is back after longer than the heartbeat timeout.
        admin.shutdown(save=False)
        server.wait(timeout=10)
        time.sleep(HEARTBEAT_MS / 1000 + 0.3)
        server = _start(port, tmp_path)
        assert admin.sismember(b.acks_key(QUEUE), held.options["redis_message_id"])

        requeued = a.maintain(force=True)  # a's first maintenance after the restart
        assert requeued == 0 and admin.llen(f"restart-ns:{QUEUE}") == 0, (
            f"{requeued} message(s) of the live broker b, still running, were re-queued "
            "because its heartbeat went stale while Redis was down"
        )
    finally:
        consumer.close()
        for broker in (a, b):
            broker.close()
        server.terminate()
        server.wait(timeout=10)
