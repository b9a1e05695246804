"""What the demo talks to: the command queue, the events stream, the simulator's admin API."""

from __future__ import annotations

import time
import urllib.request
import uuid
from collections.abc import Callable
from typing import Any

import orjson
import redis

from pms.config import Settings
from pms.messaging import wire
from pms.messaging.events import EVENTS_STREAM
from pms.messaging.results import ResultStore


class DemoError(Exception):
    """A step did not happen as narrated."""


class Gateway:
    """Enqueue a command in the Dramatiq wire format, wait for ``pms:result:{requestId}``."""

    def __init__(self, settings: Settings, client: redis.Redis) -> None:
        self.settings = settings
        self.client = client
        self.results = ResultStore(client, prefix=settings.redis_prefix)

    def send(self, actor: str, command: dict[str, Any], timeout: float = 20.0) -> dict[str, Any]:
        command = {"requestId": f"demo-{uuid.uuid4().hex}", **command}
        wire.send(
            self.client,
            self.settings.dramatiq_namespace,
            actor,
            command,
            timestamp_ms=int(time.time() * 1000),
        )
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            result = self.results.get(command["requestId"])
            if result is not None:
                if not result.get("ok"):
                    raise DemoError(f"{actor} refused: {result.get('error')}")
                data: dict[str, Any] = result.get("data") or {}
                return data
            time.sleep(0.01)
        raise DemoError(f"{actor}: no result in {timeout:.0f} s (are the workers running?)")


class Events:
    """Everything published on ``pms:events`` since the demo started, read as a gateway does."""

    def __init__(self, settings: Settings, client: redis.Redis) -> None:
        self.client = client
        self.key = settings.key(EVENTS_STREAM)
        last: Any = client.xrevrange(self.key, count=1)
        self.last_id: Any = last[0][0] if last else b"0"
        self.seen: list[dict[str, Any]] = []

    def poll(self) -> None:
        while True:
            batches: Any = self.client.xread({self.key: self.last_id}, count=1000)
            if not batches:
                return
            for entry_id, fields in batches[0][1]:
                self.last_id = entry_id
                self.seen.append(orjson.loads(fields[b"event"]))

    def wait(
        self, what: str, match: Callable[[dict[str, Any]], bool], timeout: float = 20.0
    ) -> dict[str, Any]:
        deadline = time.monotonic() + timeout
        while True:
            self.poll()
            for event in self.seen:
                if match(event):
                    return event
            if time.monotonic() > deadline:
                raise DemoError(f"no {what} within {timeout:.0f} s")
            time.sleep(0.05)

    def of(self, sub_account_id: int, type_: str | None = None) -> list[dict[str, Any]]:
        return [
            e
            for e in self.seen
            if str(e.get("subAccountId")) == str(sub_account_id)
            and (type_ is None or e["type"] == type_)
        ]


class Simulator:
    def __init__(self, url: str) -> None:
        self.url = url.rstrip("/")

    def admin(self, path: str, body: dict[str, Any] | None = None) -> Any:
        data = None if body is None else orjson.dumps(body)
        request = urllib.request.Request(  # noqa: S310 (the configured http:// simulator)
            f"{self.url}{path}",
            data=data,
            method="GET" if body is None else "POST",
            headers={"Content-Type": "application/json"},
        )
        try:
            with urllib.request.urlopen(request, timeout=5) as response:  # noqa: S310
                return orjson.loads(response.read())
        except OSError as exc:
            raise DemoError(f"simulator admin {path} failed: {exc}") from exc
