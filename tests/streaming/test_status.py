"""``pms:stream:user:live``: set while the user stream is connected, gone when it is not (or
when the streamer stops ticking); workers read it through :class:`UserStreamWatch`."""

from __future__ import annotations

import asyncio
import uuid

import redis
import redis.asyncio as aioredis

from pms.clock import SystemClock
from pms.config import Settings
from pms.streaming.status import USER_LIVE_KEY, StatusBoard, UserStreamWatch


def test_the_live_key_follows_the_user_stream(settings: Settings) -> None:
    prefix = f"{settings.redis_prefix}status-{uuid.uuid4().hex[:6]}:"
    sync = redis.Redis.from_url(settings.redis_url)
    key = f"{prefix}{USER_LIVE_KEY}"

    async def main() -> list[tuple[bool, int]]:
        client = aioredis.Redis.from_url(settings.redis_url)
        board = StatusBoard(client, SystemClock(), prefix=prefix, live_ttl_ms=400)
        market, user = board.stream("market"), board.stream("user")
        seen = []
        await board.connected(market, reconnect=False)
        await board.tick()
        seen.append((bool(sync.exists(key)), -2))  # a market stream alone: not live
        await board.connected(user, reconnect=False)
        seen.append((bool(sync.exists(key)), int(sync.pttl(key))))
        await board.tick()
        seen.append((bool(sync.exists(key)), int(sync.pttl(key))))
        await board.disconnected(user, "socket closed")
        seen.append((bool(sync.exists(key)), -2))
        await board.tick()
        seen.append((bool(sync.exists(key)), -2))
        await board.connected(user, reconnect=True)
        # No tick follows (a streamer that stopped): only the TTL keeps the key alive.
        seen.append((bool(sync.exists(key)), int(sync.pttl(key))))
        await client.aclose()
        return seen

    seen = asyncio.run(main())
    assert [live for live, _ in seen] == [False, True, True, False, False, True]
    assert all(0 < ttl <= 400 for live, ttl in seen if live)


def test_watch_asks_redis_at_most_once_per_interval_and_fails_safe(settings: Settings) -> None:
    prefix = f"{settings.redis_prefix}watch-{uuid.uuid4().hex[:6]}:"
    client = redis.Redis.from_url(settings.redis_url)
    now = [100.0]
    watch = UserStreamWatch(client, prefix, every_s=0.5, monotonic=lambda: now[0])

    assert watch() is False
    client.set(f"{prefix}{USER_LIVE_KEY}", b"1", px=5000)
    assert watch() is False  # still the answer of 100.0
    now[0] += 0.5
    assert watch() is True
    client.delete(f"{prefix}{USER_LIVE_KEY}")
    now[0] += 0.1
    assert watch() is True
    now[0] += 0.5
    assert watch() is False

    class Down:
        def exists(self, key: str) -> int:
            raise redis.ConnectionError("Connection refused")

    unreachable = UserStreamWatch(Down(), prefix)  # type: ignore[arg-type]
    assert unreachable() is False  # unknown: the worker books the fills itself
