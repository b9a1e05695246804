from __future__ import annotations

import threading
from collections.abc import Callable
from decimal import Decimal
from typing import Any

import orjson
import pytest
import redis

from pms.clock import TestClock
from pms.config import Settings
from pms.errors import InsufficientMargin
from pms.messaging import results as shapes
from pms.messaging.events import EVENT_TYPES, EventPublisher, EventType
from pms.messaging.results import DEFAULT_RESULT_TTL_S, ResultStore


def test_put_stores_and_publishes_the_same_json(msg_settings: Settings, rclient: redis.Redis):
    store = ResultStore(rclient, prefix=msg_settings.redis_prefix)
    sub = rclient.pubsub(ignore_subscribe_messages=True)
    sub.subscribe(msg_settings.key("pms:results"))
    sub.get_message(timeout=1)

    result = shapes.ok("r1", {"qty": Decimal("0.015"), "filled": True})
    written = store.put("r1", result)

    published = sub.get_message(timeout=2)
    assert published is not None and published["data"] == written
    raw = rclient.get(msg_settings.key("pms:result:r1"))
    assert raw == written
    assert orjson.loads(raw) == {
        "requestId": "r1",
        "ok": True,
        "data": {"qty": "0.015", "filled": True},
    }
    assert rclient.ttl(msg_settings.key("pms:result:r1")) > 24 * 3600
    assert DEFAULT_RESULT_TTL_S >= 24 * 3600
    assert store.get("r1") == orjson.loads(written)
    assert store.get("missing") is None
    sub.close()


def test_error_shapes():
    assert shapes.error("r2", "NOT_FOUND", "no such order") == {
        "requestId": "r2",
        "ok": False,
        "error": {"code": "NOT_FOUND", "message": "no such order", "details": {}},
    }
    exc = InsufficientMargin("needs 10 USDT more", {"missing": "10"})
    assert shapes.from_exception("r3", exc)["error"] == {
        "code": "INSUFFICIENT_MARGIN",
        "message": "needs 10 USDT more",
        "details": {"missing": "10"},
    }


def test_put_if_absent_keeps_the_first_result(msg_settings: Settings, rclient: redis.Redis):
    store = ResultStore(rclient, prefix=msg_settings.redis_prefix)
    stored, first = store.put_if_absent("r4", shapes.ok("r4", {"n": 1}))
    again, existing = store.put_if_absent("r4", shapes.ok("r4", {"n": 2}))
    assert stored and not again
    assert first == existing == {"requestId": "r4", "ok": True, "data": {"n": 1}}


def test_result_request_id_must_match(msg_settings: Settings, rclient: redis.Redis):
    store = ResultStore(rclient, prefix=msg_settings.redis_prefix)
    with pytest.raises(ValueError, match="requestId"):
        store.put("r5", shapes.ok("other"))


def test_event_envelope_channel_and_stream(msg_settings: Settings, rclient: redis.Redis):
    clock = TestClock()
    pub = EventPublisher(rclient, clock, prefix=msg_settings.redis_prefix)
    sub = rclient.pubsub(ignore_subscribe_messages=True)
    sub.subscribe(msg_settings.key("pms:events:order_update"))
    sub.get_message(timeout=1)

    stream_id = pub.publish(
        EventType.ORDER_UPDATE, "sa-1", {"orderId": "o1", "price": Decimal("61000.5")}
    )

    expected = {
        "v": 1,
        "type": "order_update",
        "ts": clock.ms(),
        "subAccountId": "sa-1",
        "data": {"orderId": "o1", "price": "61000.5"},
    }
    message = sub.get_message(timeout=2)
    assert message is not None and orjson.loads(message["data"]) == expected
    entries = rclient.xrange(msg_settings.key("pms:events"))
    assert [(e[0].decode(), list(e[1])) for e in entries] == [(stream_id, [b"event"])]
    assert orjson.loads(entries[0][1][b"event"]) == expected
    sub.close()


def test_event_types_are_the_spec_list():
    assert {
        "order_update",
        "trade_fill",
        "position_update",
        "balance_update",
        "risk_update",
        "margin_call",
        "liquidation",
        "algo_update",
        "position_drift",
        "stream_status",
    } == EVENT_TYPES


def test_unknown_event_type_is_refused(msg_settings: Settings, rclient: redis.Redis):
    pub = EventPublisher(rclient, TestClock(), prefix=msg_settings.redis_prefix)
    with pytest.raises(ValueError):
        pub.publish("bogus", "sa-1", {})


def test_stream_is_capped(msg_settings: Settings, rclient: redis.Redis):
    exact = EventPublisher(
        rclient, TestClock(), prefix=msg_settings.redis_prefix, maxlen=50, approximate=False
    )
    exact.publish_many([(EventType.TRADE_FILL, "sa-1", {"i": i}) for i in range(120)])
    assert rclient.xlen(msg_settings.key("pms:events")) == 50
    # The default (approximate, MAXLEN ~) trims by whole stream nodes: bounded, cheap.
    approx = EventPublisher(rclient, TestClock(), prefix=msg_settings.redis_prefix, maxlen=200)
    approx.publish_many([(EventType.TRADE_FILL, "sa-1", {"i": i}) for i in range(1000)])
    assert 200 <= rclient.xlen(msg_settings.key("pms:events")) <= 300


def test_replay_from_an_id(msg_settings: Settings, rclient: redis.Redis):
    clock = TestClock()
    pub = EventPublisher(rclient, clock, prefix=msg_settings.redis_prefix)
    ids = pub.publish_many([(EventType.BALANCE_UPDATE, "sa-1", {"i": i}) for i in range(5)])
    clock.advance(1)
    later = pub.publish(EventType.POSITION_UPDATE, "sa-2", {"i": 5})

    replay = pub.read(from_id=ids[2])
    assert [eid for eid, _ in replay] == [ids[3], ids[4], later]
    assert [env["data"]["i"] for _, env in replay] == [3, 4, 5]
    assert replay[-1][1]["ts"] == clock.ms()


def test_publish_many_is_thread_safe_and_ordered_per_batch(
    msg_settings: Settings, rclient: redis.Redis
):
    pub = EventPublisher(rclient, TestClock(), prefix=msg_settings.redis_prefix)

    def burst(n: int) -> None:
        pub.publish_many([(EventType.ALGO_UPDATE, f"sa-{n}", {"k": k}) for k in range(20)])

    threads = [threading.Thread(target=burst, args=(n,)) for n in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    events = [env for _, env in pub.read("0")]
    assert len(events) == 80
    for n in range(4):
        assert [e["data"]["k"] for e in events if e["subAccountId"] == f"sa-{n}"] == list(range(20))


def _published(
    client: redis.Redis, pub: EventPublisher, send: Callable[[EventPublisher], list[str]]
) -> tuple[list[tuple[bytes, bytes]], list[dict[bytes, bytes]], list[str]]:
    """What ``send`` put on the wire: (channel, message) pairs, stream entries, stream ids."""
    sub = client.pubsub(ignore_subscribe_messages=True)
    sub.psubscribe(f"{pub.channel(EventType.ORDER_UPDATE)[: -len('order_update')]}*")
    sub.get_message(timeout=1)
    ids = send(pub)
    messages = []
    while (message := sub.get_message(timeout=0.5)) is not None:
        messages.append((message["channel"], message["data"]))
    sub.close()
    entries = client.xrange(pub.stream, min=ids[0], max=ids[-1]) if ids else []
    assert [e[0].decode() for e in entries] == ids
    return messages, [e[1] for e in entries], ids


@pytest.mark.parametrize("approximate", [True, False])
def test_a_framed_burst_is_what_the_pipeline_writes(
    msg_settings: Settings, rclient: redis.Redis, approximate: bool
) -> None:
    # Arrange: two publishers on one clock; a prefix that is not ASCII (bytes ≠ chars).
    clock = TestClock()
    batch: list[tuple[EventType | str, int | str | None, Any]] = [
        (EventType.RISK_UPDATE, 7, {"marginRatio": "0.5", "ü": Decimal("1.10")}),
        ("order_update", "sa-2", {"orderId": 3}),
        (EventType.RISK_UPDATE, None, orjson.Fragment(b'{"subAccountId":8,"tier":"NORMAL"}')),
    ]
    prefix = f"{msg_settings.redis_prefix}ü:"

    def via_pipeline(pub: EventPublisher) -> list[str]:
        pipe = rclient.pipeline(transaction=True)
        count = pub.add_to(pipe, batch)
        return EventPublisher._stream_ids(pipe.execute()[: 2 * count])

    # Act: the same burst framed by hand, and through redis-py's pipeline
    framed = _published(
        rclient,
        EventPublisher(rclient, clock, prefix=prefix, maxlen=1000, approximate=approximate),
        lambda pub: pub.publish_many(batch),
    )
    piped = _published(
        rclient,
        EventPublisher(rclient, clock, prefix=prefix, maxlen=1000, approximate=approximate),
        via_pipeline,
    )

    # Assert: same channels, messages and stream entries; the fragment embedded as is.
    assert framed[:2] == piped[:2]
    channels = [c.decode() for c, _ in framed[0]]
    kinds = ("risk_update", "order_update", "risk_update")
    assert channels == [f"{prefix}pms:events:{kind}" for kind in kinds]
    assert framed[1] == [{b"event": message} for _, message in framed[0]]
    assert framed[0][2][1] == (
        b'{"v":1,"type":"risk_update","ts":%d,"subAccountId":null,'
        b'"data":{"subAccountId":8,"tier":"NORMAL"}}' % clock.ms()
    )
    assert orjson.loads(framed[0][0][1])["data"] == {"marginRatio": "0.5", "ü": "1.10"}


def test_a_burst_on_a_dropped_connection_is_published_through_the_client(
    msg_settings: Settings,
) -> None:
    own = redis.Redis.from_url(msg_settings.redis_url)  # a pool of its own, to drop its connection
    try:
        pub = EventPublisher(own, TestClock(), prefix=msg_settings.redis_prefix)
        pub.publish(EventType.BALANCE_UPDATE, 1, {"i": 0})
        killer = redis.Redis.from_url(msg_settings.redis_url)
        killer.client_kill_filter(_id=own.client_id())  # what a Redis restart does to the pool
        killer.close()

        ids = pub.publish_many([(EventType.BALANCE_UPDATE, 1, {"i": i}) for i in (1, 2)])

        assert [env["data"]["i"] for _, env in pub.read("0")] == [0, 1, 2]
        assert [eid for eid, _ in pub.read("0")][1:] == ids
    finally:
        own.close()


def test_a_failed_burst_raises_and_leaves_the_connection_usable(
    msg_settings: Settings, rclient: redis.Redis
) -> None:
    pub = EventPublisher(rclient, TestClock(), prefix=msg_settings.redis_prefix)
    rclient.set(pub.stream, "not a stream")

    with pytest.raises(redis.ResponseError, match="WRONGTYPE"):
        pub.publish_many([(EventType.ALGO_UPDATE, 1, {"k": k}) for k in range(3)])

    rclient.delete(pub.stream)
    assert len(pub.publish_many([(EventType.ALGO_UPDATE, 1, {"k": 1})])) == 1
    assert [env["data"] for _, env in pub.read("0")] == [{"k": 1}]


@pytest.mark.parametrize(("approximate", "bursts"), [(True, 1), (False, 1), (True, 40)])
def test_the_framed_multi_is_byte_for_byte_redis_pys(
    msg_settings: Settings, rclient: redis.Redis, approximate: bool, bursts: int
) -> None:
    pub = EventPublisher(
        rclient, TestClock(), prefix=f"{msg_settings.redis_prefix}ü:", approximate=approximate
    )
    pair = [(EventType.RISK_UPDATE, 7, {"k": "ü" * 1000}), (EventType.ORDER_UPDATE, 8, {"k": 2})]
    batch = pair * bursts  # 40 pairs: ~160 kB, sent in several pieces
    payloads = pub._payloads(batch)
    pipe = rclient.pipeline(transaction=True)
    pub._queue(pipe, payloads)
    conn = rclient.connection_pool.get_connection()
    try:
        commands = [("MULTI",), *(args for args, _options in pipe.command_stack), ("EXEC",)]
        expected = b"".join(conn.pack_commands(commands))
    finally:
        rclient.connection_pool.release(conn)

    pieces = pub._packed(payloads)
    assert b"".join(pieces) == expected
    assert len(pieces) == (1 if bursts == 1 else 3)
