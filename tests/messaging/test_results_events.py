from __future__ import annotations

import threading
from decimal import Decimal

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
