"""``BlockingClaimConsumer.ack`` used to drop the message from ``_in_flight`` in a ``finally``,
even when the ack itself failed (Redis unreachable). Dramatiq's ``post_process_message`` retries
that ack 5 s later, but meanwhile the consumer's own connection also dropped (same outage),
so its recovery (``requeue_stranded``) finds the id in the ack set, held by nobody, and puts
the already-processed message back on the queue: it ran again. Now it stays held until
its ack is through."""

from __future__ import annotations

import time

import pytest
import redis
from dramatiq.errors import ConnectionClosed

from pms.config import Settings
from pms.messaging import wire
from pms.messaging.broker import build_broker, make_client

QUEUE = "pms.trading"


def test_a_processed_message_whose_ack_failed_is_not_run_again(
    msg_settings: Settings, rclient: redis.Redis
) -> None:
    name = f"{msg_settings.redis_prefix}audit"
    broker = build_broker(
        msg_settings, client=make_client(msg_settings.redis_url, client_name=name)
    )
    broker.declare_queue(QUEUE)
    ns = broker.namespace
    wire.send(
        rclient,
        ns,
        "record",
        {"requestId": "r1"},
        timestamp_ms=int(time.time() * 1000),
        queue_name=QUEUE,
    )
    consumer = broker.consume(QUEUE, prefetch=4, timeout=100)
    first = None
    deadline = time.monotonic() + 3
    while first is None and time.monotonic() < deadline:
        first = next(consumer)
    assert first is not None
    rid = first.options["redis_message_id"]

    # The worker thread finished the actor; Redis is unreachable for its ack (redis-py gave
    # up after its retries). Dramatiq will retry the ack in 5 s (post_process_message).
    real_ack = broker.do_ack

    def failing_ack(*args: object) -> None:
        raise redis.ConnectionError("Error 111 connecting to 127.0.0.1:6379. Connection refused.")

    broker.do_ack = failing_ack  # type: ignore[method-assign]
    with pytest.raises(ConnectionClosed):
        consumer.ack(first)
    broker.do_ack = real_ack  # type: ignore[method-assign]

    # The same outage cut the consumer's blocking connection.
    for c in rclient.client_list():
        if c.get("name") == name:
            rclient.client_kill_filter(_id=c["id"])

    # The consumer thread keeps iterating while the ack waits for its retry.
    again = []
    deadline = time.monotonic() + 1.5
    while time.monotonic() < deadline:
        m = next(consumer)
        if m is not None:
            again.append(m)
    try:
        assert [m.message_id for m in again] == [], (
            f"message {first.message_id} (redis id {rid}) was processed and only its ack "
            "failed, yet it was put back on the queue and delivered again"
        )
    finally:
        consumer.close()
        broker.close()
