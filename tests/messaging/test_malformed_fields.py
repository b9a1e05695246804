"""Malformed Dramatiq messages from a producer outside the engine (the gateway) must be
dead-lettered (or answered) without stalling the consumer or killing worker threads: the
good commands around them are still delivered."""

from __future__ import annotations

import threading
import time
import uuid
from typing import Any

import dramatiq
import pytest
import redis

from pms.config import Settings
from pms.messaging import wire
from pms.messaging.broker import build_broker

QUEUE = "pms.trading"


def _run(
    settings: Settings, rclient: redis.Redis, mutate: Any, *, bad_count: int = 1, threads: int = 2
) -> tuple[list[str], set[str], int]:
    broker = build_broker(settings)
    broker.declare_queue(QUEUE)
    ns = broker.namespace
    seen: list[str] = []
    lock = threading.Lock()

    @dramatiq.actor(broker=broker, queue_name=QUEUE, actor_name="record")
    def record(command: dict[str, Any]) -> None:
        with lock:
            seen.append(command["requestId"])

    now = int(time.time() * 1000)
    bad_rids = []
    for i in range(bad_count):
        bad = wire.build_message(
            "record", {"requestId": f"bad-{i}"}, timestamp_ms=now, queue_name=QUEUE
        )
        rid = str(uuid.uuid4())
        bad["options"] = {"redis_message_id": rid}
        mutate(bad)
        wire.enqueue_fast(rclient, ns, QUEUE, rid, wire.dumps(bad))
        bad_rids.append(rid)
    for rid in ("good-1", "good-2"):
        wire.send(rclient, ns, "record", {"requestId": rid}, timestamp_ms=now, queue_name=QUEUE)

    worker = dramatiq.Worker(broker, worker_threads=threads, worker_timeout=100)
    worker.start()
    try:
        deadline = time.monotonic() + 8  # > the 3 s consumer restart delay
        while time.monotonic() < deadline and not {"good-1", "good-2"} <= set(seen):
            time.sleep(0.05)
        stranded = {m.decode() for m in rclient.smembers(broker.acks_key(QUEUE))} - set(bad_rids)
        dead = int(rclient.zcard(f"{ns}:{QUEUE}.XQ"))
    finally:
        worker.stop(timeout=2000)
        broker.close()
    return seen, stranded, dead


@pytest.mark.parametrize(
    "mutate",
    [
        pytest.param(lambda m: m.__setitem__("options", [m["options"]]), id="options-a-list"),
        pytest.param(lambda m: m.__setitem__("message_id", ["x"]), id="message_id-a-list"),
        pytest.param(lambda m: m.__setitem__("actor_name", ["record"]), id="actor_name-a-list"),
    ],
)
def test_good_commands_claimed_with_a_malformed_one_are_delivered(
    msg_settings: Settings, rclient: redis.Redis, mutate: Any
) -> None:
    seen, stranded, _dead = _run(msg_settings, rclient, mutate)
    assert {"good-1", "good-2"} <= set(seen), (
        f"delivered {seen}; {len(stranded)} good id(s) stranded in the live broker's ack set"
    )


def test_a_wrong_queue_name_does_not_kill_the_worker_threads(
    msg_settings: Settings, rclient: redis.Redis
) -> None:
    # Pushed on pms.trading but naming a queue this worker does not consume: Dramatiq's
    # worker thread looks up ``consumers[message.queue_name]`` in a ``finally`` and dies of
    # the KeyError. Two such messages kill both threads; the good commands then never run.
    seen, _stranded, _dead = _run(
        msg_settings,
        rclient,
        lambda m: m.__setitem__("queue_name", "pms.nope"),
        bad_count=2,
        threads=2,
    )
    assert {"good-1", "good-2"} <= set(seen), f"delivered only {seen}"


def test_commands_with_a_far_eta_on_the_main_queue_do_not_stall_it(
    msg_settings: Settings, rclient: redis.Redis
) -> None:
    # ``options.eta`` belongs on the delay queue (docs/wire-format.md); on the main queue the
    # consumer holds such a message in memory, unacked, until its eta, and it counts against
    # the queue's prefetch (2 x threads). A handful of them (a producer writing eta in µs,
    # or a hostile one) and the consumer stops claiming: every later command waits.
    far = int(time.time() * 1000) + 86_400_000
    seen, _stranded, _dead = _run(
        msg_settings,
        rclient,
        lambda m: m["options"].__setitem__("eta", far),
        bad_count=2,
        threads=1,
    )
    assert {"good-1", "good-2"} <= set(seen), f"delivered only {seen}"
