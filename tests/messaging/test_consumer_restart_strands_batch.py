"""A decodable message without ``options.redis_message_id`` (the producer mistake the
reference warns about) made ``BlockingClaimConsumer._next`` raise KeyError. Dramatiq's
ConsumerThread then throws the consumer away and builds a new one 3 s later; the new one
starts with ``_recover = False`` and an empty cache, so the *good* messages claimed in the
same batch (already in this live broker's ack set) were never delivered while it lived. It
is dead-lettered now, like an undecodable payload."""

from __future__ import annotations

import threading
import time
import uuid
from typing import Any

import dramatiq
import redis

from pms.config import Settings
from pms.messaging import wire
from pms.messaging.broker import build_broker

QUEUE = "pms.trading"


def test_good_messages_claimed_with_a_malformed_one_are_still_delivered(
    msg_settings: Settings, rclient: redis.Redis
) -> None:
    broker = build_broker(msg_settings)
    broker.declare_queue(QUEUE)
    ns = broker.namespace
    seen: list[str] = []
    lock = threading.Lock()

    @dramatiq.actor(broker=broker, queue_name=QUEUE, actor_name="record")
    def record(command: dict[str, Any]) -> None:
        with lock:
            seen.append(command["requestId"])

    now = int(time.time() * 1000)
    # The malformed one first: valid JSON, a Dramatiq message in every field, but its options
    # lack redis_message_id (still listed/hashed under an id, as a Node producer would write).
    bad = wire.build_message("record", {"requestId": "bad"}, timestamp_ms=now, queue_name=QUEUE)
    bad_rid = str(uuid.uuid4())
    bad["options"] = {}
    wire.enqueue_fast(rclient, ns, QUEUE, bad_rid, wire.dumps(bad))
    for rid in ("good-1", "good-2"):
        wire.send(rclient, ns, "record", {"requestId": rid}, timestamp_ms=now, queue_name=QUEUE)

    worker = dramatiq.Worker(broker, worker_threads=2, worker_timeout=100)  # prefetch 4
    worker.start()
    try:
        deadline = time.monotonic() + 8  # > the 3 s consumer restart delay, > a 5 s sweep
        while time.monotonic() < deadline and len(seen) < 2:
            time.sleep(0.05)
        stranded = {m.decode() for m in rclient.smembers(broker.acks_key(QUEUE))} - {bad_rid}
        assert sorted(seen) == ["good-1", "good-2"], (
            f"delivered {seen}; {len(stranded)} good id(s) stranded in the live broker's "
            f"ack set, which no sweep will ever requeue"
        )
    finally:
        worker.stop(timeout=5000)
        broker.close()
