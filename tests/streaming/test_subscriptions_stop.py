"""The subscription manager's event listener is over, its pub/sub connection closed, when
``run`` returns: the streamer closes the Redis client and then the loop right after, and a
listener still winding down then left an open connection behind (a ResourceWarning that
surfaced, as an error, in whichever later test the garbage collector happened to run)."""

from __future__ import annotations

import asyncio

import pytest
import redis.asyncio as aioredis
from redis.asyncio.client import PubSub

from pms.app import App
from pms.streaming.subscriptions import SubscriptionManager


def test_run_returns_only_once_its_listener_is_done(
    app: App, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Closing the pub/sub takes a few loop turns (a socket to shut); made a little slower
    here, so the listener is still closing when ``run`` has been cancelled."""
    close = PubSub.aclose

    async def slow_close(self: PubSub) -> None:
        await asyncio.sleep(0.05)
        await close(self)

    monkeypatch.setattr(PubSub, "aclose", slow_close)

    async def scenario() -> tuple[set[asyncio.Task[object]], int]:
        client = aioredis.Redis.from_url(app.settings.redis_url)
        manager = SubscriptionManager(
            (), app.sessions, [], client=client, prefix=app.settings.redis_prefix, refresh_s=60
        )
        runner = asyncio.create_task(manager.run())
        # The listener is subscribed: one pub/sub connection is in use.
        for _ in range(500):
            if client.connection_pool._in_use_connections:  # type: ignore[attr-defined]
                break
            await asyncio.sleep(0.01)
        assert client.connection_pool._in_use_connections  # type: ignore[attr-defined]
        runner.cancel()
        await asyncio.gather(runner, return_exceptions=True)
        left = {t for t in asyncio.all_tasks() if t is not asyncio.current_task()}
        in_use = len(client.connection_pool._in_use_connections)  # type: ignore[attr-defined]
        await client.aclose()
        return left, in_use

    left, in_use = asyncio.run(scenario())
    assert left == set(), left  # nothing still running when run() has returned
    assert in_use == 0  # the listener's connection went back before the client closed
