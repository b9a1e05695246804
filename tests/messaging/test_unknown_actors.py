"""A command that no actor serves is answered (VALIDATION_ERROR naming it), dead-lettered as
Dramatiq does, and never overwrites the stored result of another command."""

from __future__ import annotations

import time
from collections.abc import Iterator
from typing import Any

import dramatiq
import orjson
import pytest
import redis

from pms.config import Settings
from pms.messaging import results, wire
from pms.messaging.broker import build_broker, make_client
from pms.messaging.results import ResultStore
from pms.messaging.unknown_actors import AnswerUnknownActors
from tests.support import wait_for

QUEUE = "pms.trading"


class Fleet:
    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.client = make_client(settings.redis_url)
        self.results = ResultStore(self.client, prefix=settings.redis_prefix)
        self.broker = build_broker(settings, client=make_client(settings.redis_url))
        self.broker.add_middleware(AnswerUnknownActors(self.results))
        self.broker.declare_queue(QUEUE)

        @dramatiq.actor(broker=self.broker, queue_name=QUEUE, actor_name="ping")
        def ping(command: dict[str, Any]) -> None:
            self.results.put(command["requestId"], results.ok(command["requestId"]))

        self.worker = dramatiq.Worker(self.broker, worker_threads=2, worker_timeout=100)
        self.pubsub = self.client.pubsub(ignore_subscribe_messages=True)
        self.pubsub.subscribe(self.results.channel)

    def send(self, actor: str, command: Any) -> None:
        message = wire.build_message(actor, {}, timestamp_ms=0, queue_name=QUEUE)
        message["args"] = [command]
        pipe = self.client.pipeline(transaction=True)
        rid = message["options"]["redis_message_id"]
        wire.enqueue_raw(pipe, self.settings.dramatiq_namespace, QUEUE, rid, wire.dumps(message))
        pipe.execute()

    def published(self, request_id: str, timeout: float = 5.0) -> dict[str, Any]:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            item = self.pubsub.get_message(timeout=0.1)
            if item is not None:
                result: dict[str, Any] = orjson.loads(item["data"])
                if result.get("requestId") == request_id:
                    return result
        raise AssertionError(f"no result published for {request_id}")

    def dead_letters(self) -> int:
        return int(self.client.zcard(f"{self.settings.dramatiq_namespace}:{QUEUE}.XQ"))


@pytest.fixture
def fleet(msg_settings: Settings) -> Iterator[Fleet]:
    f = Fleet(msg_settings)
    f.worker.start()
    yield f
    f.worker.stop(timeout=5000)
    f.pubsub.close()
    f.broker.close()


def test_an_unknown_command_is_answered_and_dead_lettered(fleet: Fleet) -> None:
    fleet.send("no_such_actor", {"requestId": "u-1"})
    result = fleet.published("u-1")
    assert result["ok"] is False
    assert result["error"]["code"] == "VALIDATION_ERROR"
    assert result["error"]["message"] == "unknown command 'no_such_actor'"
    assert fleet.results.get("u-1") == result  # stored: a gateway's GET fallback finds it
    wait_for(lambda: fleet.dead_letters() >= 1, 5, message="the dead letter")


def test_a_protocol_command_this_version_does_not_serve_says_so(fleet: Fleet) -> None:
    fleet.send("start_chase", {"requestId": "u-2", "subAccountId": 1})
    error = fleet.published("u-2")["error"]
    assert error["code"] == "VALIDATION_ERROR" and error["details"] == {"actor": "start_chase"}
    assert "not served by this version" in error["message"]


def test_another_commands_stored_result_is_kept(fleet: Fleet) -> None:
    fleet.send("ping", {"requestId": "u-3"})
    assert fleet.published("u-3")["ok"] is True
    fleet.send("no_such_actor", {"requestId": "u-3"})
    assert fleet.published("u-3")["error"]["code"] == "VALIDATION_ERROR"  # heard by the sender
    assert fleet.results.get("u-3") == results.ok("u-3")  # the first command's result stays


@pytest.mark.parametrize(
    "command",
    [{"requestId": ""}, {"requestId": 7}, {"no": "id"}, "text", None, {"requestId": "x" * 65}],
)
def test_without_a_usable_request_id_nothing_is_answered_and_the_fleet_goes_on(
    fleet: Fleet, command: Any, rclient: redis.Redis
) -> None:
    fleet.send("no_such_actor", command)
    fleet.send("ping", {"requestId": "after"})
    assert fleet.published("after")["ok"] is True
    prefix = fleet.settings.redis_prefix
    keys = {k.decode() for k in rclient.scan_iter(match=f"{prefix}pms:result:*")}
    assert keys == {f"{prefix}pms:result:after"}
