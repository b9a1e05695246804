"""The blocking-claim broker with an in-process Dramatiq worker, against real Redis."""

from __future__ import annotations

import json
import shutil
import subprocess
import threading
import time
from collections.abc import Iterator
from typing import Any

import dramatiq
import pytest
import redis

from pms.config import Settings
from pms.messaging import wire
from pms.messaging.broker import FastRedisBroker, build_broker, make_client
from tests.support import wait_for

from .conftest import ROOT

QUEUE = "pms.trading"


class Harness:
    def __init__(self, settings: Settings) -> None:
        self.client_name = f"{settings.redis_prefix}broker"
        self.broker = build_broker(
            settings, client=make_client(settings.redis_url, client_name=self.client_name)
        )
        self.broker.declare_queue(QUEUE)
        self.seen: list[dict[str, Any]] = []
        self.arrived = threading.Condition()
        seen, arrived = self.seen, self.arrived

        @dramatiq.actor(broker=self.broker, queue_name=QUEUE, actor_name="record")
        def record(command: dict[str, Any]) -> None:
            with arrived:
                seen.append({**command, "_at": time.monotonic()})
                arrived.notify_all()

        self.record = record
        self.gate = threading.Event()
        gate = self.gate

        @dramatiq.actor(broker=self.broker, queue_name=QUEUE, actor_name="held")
        def held(command: dict[str, Any]) -> None:
            gate.wait(5)
            record(command)

        self.held = held
        self.worker = dramatiq.Worker(self.broker, worker_threads=2, worker_timeout=100)

    def wait_for(self, n: int, timeout: float = 5.0) -> list[dict[str, Any]]:
        with self.arrived:
            assert self.arrived.wait_for(lambda: len(self.seen) >= n, timeout), (
                f"only {len(self.seen)} of {n} messages consumed"
            )
            return list(self.seen)


@pytest.fixture
def harness(msg_settings: Settings) -> Iterator[Harness]:
    h = Harness(msg_settings)
    h.worker.start()
    yield h
    h.worker.stop(timeout=5000)
    h.broker.close()


def test_enqueue_starts_the_actor_at_once(harness: Harness) -> None:
    time.sleep(0.2)  # consumers idle, blocked in BLMOVE
    latencies = []
    for i in range(20):
        t0 = time.monotonic()
        harness.record.send({"requestId": f"r{i}"})
        seen = harness.wait_for(i + 1)
        latencies.append(seen[-1]["_at"] - t0)
        time.sleep(0.03)  # each one starts from idle, some across a BLMOVE timeout
    latencies.sort()
    # Generous bounds for a shared CI box; the benchmark measures the real figures.
    assert latencies[10] < 0.01, latencies


def test_a_stock_dramatiq_producer_is_served_at_once(
    harness: Harness, msg_settings: Settings
) -> None:
    """What stock Dramatiq's ``RedisBroker.enqueue`` writes (a Lua HSET + RPUSH) needs no
    signal of ours: the RPUSH wakes the consumer blocked in BLMOVE."""
    from dramatiq.brokers.redis import RedisBroker

    stock = RedisBroker(url=msg_settings.redis_url, namespace=msg_settings.dramatiq_namespace)
    stock.declare_queue(QUEUE)
    time.sleep(0.2)
    latencies = []
    for i in range(5):
        t0 = time.monotonic()
        stock.enqueue(
            dramatiq.Message(
                queue_name=QUEUE,
                actor_name="record",
                args=({"requestId": f"stock{i}"},),
                kwargs={},
                options={},
            )
        )
        latencies.append(harness.wait_for(i + 1)[-1]["_at"] - t0)
    assert [s["requestId"] for s in harness.seen] == [f"stock{i}" for i in range(5)]
    # Far below the 100 ms BLMOVE timeout: each was woken, not polled.
    assert sorted(latencies)[2] < 0.02, latencies
    stock.close()


def test_a_message_claimed_but_not_yet_in_the_ack_set_is_not_lost(
    msg_settings: Settings, rclient: redis.Redis
) -> None:
    """An id BLMOVE moved into the claim list whose claim script did not run (the script cache
    was flushed, or the process died in between) is claimed by the next call, or swept back
    to the queue once its broker is dead."""
    broker: FastRedisBroker = build_broker(msg_settings, heartbeat_timeout_ms=1000)
    broker.declare_queue(QUEUE)
    ns = broker.namespace
    rclient.hset(f"{ns}:{QUEUE}.msgs", "c1", b"payload-1")
    rclient.rpush(broker.claims_key(QUEUE), "c1")
    rclient.script_flush()
    assert broker.do_fetch(QUEUE, 5) == [b"payload-1"]  # re-loads the script, claims c1
    assert rclient.smembers(broker.acks_key(QUEUE)) == {b"c1"}
    assert not rclient.exists(broker.claims_key(QUEUE))

    now = int(time.time() * 1000)
    rclient.zadd(f"{ns}:__heartbeats__", {"dead-broker": now - 5000})
    rclient.hset(f"{ns}:{QUEUE}.msgs", "c2", b"payload-2")
    rclient.rpush(f"{ns}:__claims__.dead-broker.{QUEUE}", "c2")
    assert broker.maintain(force=True) == 1
    assert rclient.lrange(f"{ns}:{QUEUE}", 0, -1) == [b"c2"]
    assert not rclient.exists(f"{ns}:__claims__.dead-broker.{QUEUE}")
    broker.close()


def test_the_consumer_survives_a_flushed_script_cache(
    harness: Harness, rclient: redis.Redis
) -> None:
    harness.record.send({"requestId": "before"})
    harness.wait_for(1)
    rclient.script_flush()  # what a Redis restart does to EVALSHA
    for i in range(3):
        harness.record.send({"requestId": f"after{i}"})
    seen = harness.wait_for(4)
    assert [s["requestId"] for s in seen] == ["before", "after0", "after1", "after2"]


def test_delayed_message_runs_after_its_delay(harness: Harness) -> None:
    t0 = time.monotonic()
    harness.record.send_with_options(args=({"requestId": "later"},), delay=300)
    seen = harness.wait_for(1)
    assert 0.3 <= seen[0]["_at"] - t0 < 1.0


def test_consumer_survives_its_redis_connections_being_killed(
    harness: Harness, rclient: redis.Redis
) -> None:
    harness.record.send({"requestId": "before"})
    harness.wait_for(1)
    killed = 0
    for c in rclient.client_list():
        if c.get("name") == harness.client_name:
            rclient.client_kill_filter(_id=c["id"])
            killed += 1
    assert killed >= 2  # at least the pool's connection and the consumer's own
    time.sleep(0.3)
    for i in range(5):
        harness.record.send({"requestId": f"after{i}"})
    seen = harness.wait_for(6, timeout=10)
    assert {s["requestId"] for s in seen} == {"before", *(f"after{i}" for i in range(5))}
    # and every message gets acked: nothing left in flight
    ns = harness.broker.namespace
    wait_for(lambda: rclient.hlen(f"{ns}:{QUEUE}.msgs") == 0, 2, message="every message acked")


def test_a_claim_whose_reply_was_lost_runs_after_the_reconnect(
    harness: Harness, rclient: redis.Redis
) -> None:
    """A connection lost after the claim script ran but before its reply arrived leaves the
    id in this (live) broker's ack set, held by nothing: no sweep would ever re-queue it.
    After the reconnect the consumer puts such ids back on the queue; the ones it holds
    (in flight, cached) stay."""
    ns = harness.broker.namespace
    harness.record.send({"requestId": "before"})
    harness.wait_for(1)
    message = wire.build_message(
        "record", {"requestId": "stranded"}, timestamp_ms=int(time.time() * 1000), queue_name=QUEUE
    )
    rid = message["options"]["redis_message_id"]
    rclient.hset(f"{ns}:{QUEUE}.msgs", rid, wire.dumps(message))
    rclient.sadd(harness.broker.acks_key(QUEUE), rid)
    time.sleep(0.3)
    assert [s["requestId"] for s in harness.seen] == ["before"]  # nothing runs it by itself

    for c in rclient.client_list():
        if c.get("name") == harness.client_name:
            rclient.client_kill_filter(_id=c["id"])
    seen = harness.wait_for(2, timeout=10)
    assert [s["requestId"] for s in seen] == ["before", "stranded"]
    wait_for(lambda: rclient.hlen(f"{ns}:{QUEUE}.msgs") == 0, 2, message="acked, once")
    assert not rclient.smembers(harness.broker.acks_key(QUEUE))


def test_a_message_in_flight_when_the_connection_drops_runs_once(
    harness: Harness, rclient: redis.Redis
) -> None:
    """The recovery after a reconnect leaves alone what the worker is running."""
    harness.held.send({"requestId": "in-flight"})
    wait_for(lambda: rclient.smembers(harness.broker.acks_key(QUEUE)), 5, message="claimed")
    killed = {c["id"] for c in rclient.client_list() if c.get("name") == harness.client_name}
    for client_id in killed:
        rclient.client_kill_filter(_id=client_id)

    def blocked_again() -> bool:
        # The consumer claims on a new connection only after its recovery step has run.
        return any(
            c.get("name") == harness.client_name and c["id"] not in killed and c["cmd"] == "blmove"
            for c in rclient.client_list()
        )

    wait_for(blocked_again, 5, message="the consumer to reconnect")
    harness.gate.set()
    harness.wait_for(1)
    time.sleep(0.5)  # a wrongly re-queued copy would run now
    assert [s["requestId"] for s in harness.seen] == ["in-flight"]


def test_worker_stops_promptly(msg_settings: Settings) -> None:
    h = Harness(msg_settings)
    h.worker.start()
    time.sleep(0.3)
    t0 = time.monotonic()
    h.worker.stop(timeout=5000)
    assert time.monotonic() - t0 < 1.5
    h.broker.close()


def test_many_messages_across_two_consumers_each_run_once(msg_settings: Settings) -> None:
    first, second = Harness(msg_settings), Harness(msg_settings)
    for h in (first, second):
        h.worker.start()
    try:
        for i in range(300):
            first.record.send({"requestId": f"m{i}"})
        wait_for(lambda: len(first.seen) + len(second.seen) >= 300, 10, message="300 runs")
        ids = [s["requestId"] for s in first.seen + second.seen]
        assert sorted(ids) == sorted(f"m{i}" for i in range(300))
    finally:
        for h in (first, second):
            h.worker.stop(timeout=5000)
            h.broker.close()


def test_maintenance_requeues_a_dead_brokers_messages_on_every_queue(
    msg_settings: Settings, rclient: redis.Redis
) -> None:
    broker: FastRedisBroker = build_broker(msg_settings, heartbeat_timeout_ms=1000)
    for q in wire.QUEUES:
        broker.declare_queue(q)
    ns = broker.namespace
    now = int(time.time() * 1000)
    # A dead process holding one unacked message on each of two queues.
    rclient.zadd(f"{ns}:__heartbeats__", {"dead-broker": now - 5000})
    for q in ("pms.risk", "pms.sync.DQ"):
        rclient.hset(f"{ns}:{q}.msgs", f"id-{q}", b"{}")
        rclient.sadd(f"{ns}:__acks__.dead-broker.{q}", f"id-{q}")

    assert broker.maintain(force=True) == 2
    assert rclient.lrange(f"{ns}:pms.risk", 0, -1) == [b"id-pms.risk"]
    assert rclient.lrange(f"{ns}:pms.sync.DQ", 0, -1) == [b"id-pms.sync.DQ"]
    assert not rclient.exists(f"{ns}:__acks__.dead-broker.pms.risk")
    assert rclient.zscore(f"{ns}:__heartbeats__", "dead-broker") is None
    assert rclient.zscore(f"{ns}:__heartbeats__", broker.broker_id) is not None
    assert broker.maintain() == 0  # throttled: at most once per interval
    broker.close()


@pytest.mark.skipif(shutil.which("node") is None, reason="node is not installed")
def test_python_send_writes_what_the_node_client_writes(
    msg_settings: Settings, rclient: redis.Redis
) -> None:
    node_modules = f"{ROOT}/clients/node/node_modules/ioredis"
    if not __import__("os").path.isdir(node_modules):
        pytest.skip("run npm ci in clients/node first")
    ns = msg_settings.dramatiq_namespace
    script = (
        "const {PmsClient}=require('./src');"
        f"const c=new PmsClient({{redisUrl:{json.dumps(msg_settings.redis_url)},namespace:{json.dumps(ns)}}});"
        "c.enqueue({requestId:'n1',userId:'u1',qty:'0.015'},{actor:'place_market_order'})"
        ".then(m=>{console.log(JSON.stringify(m));return c.close();})"
    )
    out = subprocess.run(
        ["node", "-e", script], cwd=f"{ROOT}/clients/node", capture_output=True, check=True
    )
    node_msg = json.loads(out.stdout)
    py_msg = wire.send(
        rclient,
        ns,
        "place_market_order",
        {"requestId": "n1", "userId": "u1", "qty": "0.015"},
        timestamp_ms=int(time.time() * 1000),
    )

    stored = {
        k.decode(): json.loads(v) for k, v in rclient.hgetall(f"{ns}:pms.trading.msgs").items()
    }
    rids = [r.decode() for r in rclient.lrange(f"{ns}:pms.trading", 0, -1)]
    assert rids == [node_msg["options"]["redis_message_id"], py_msg["options"]["redis_message_id"]]
    node_stored, py_stored = stored[rids[0]], stored[rids[1]]
    assert node_stored == node_msg and py_stored == py_msg
    assert list(node_stored) == list(py_stored)  # same fields, same order
    volatile = ("message_id", "message_timestamp", "options")
    assert {k: v for k, v in node_stored.items() if k not in volatile} == {
        k: v for k, v in py_stored.items() if k not in volatile
    }
    for m in (node_stored, py_stored):
        assert list(m["options"]) == ["redis_message_id"]
        assert m["options"]["redis_message_id"] != m["message_id"]
    assert py_stored["queue_name"] == "pms.trading" and py_stored["args"][0]["qty"] == "0.015"


def test_decimal_is_encoded_as_a_string() -> None:
    from decimal import Decimal

    assert wire.dumps({"q": Decimal("0.10")}) == b'{"q":"0.10"}'
    assert wire.OrjsonEncoder().decode(wire.OrjsonEncoder().encode({"a": [1]})) == {"a": [1]}
