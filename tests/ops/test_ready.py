"""``/ready`` says false when a dependency is gone or the streamer is stale, true again after."""

from __future__ import annotations

import time
from typing import Any

import orjson
import redis
from aiohttp import ClientSession

from pms.api.probes import LEADER_KEY, STATUS_KEY, Probes
from pms.config import Settings
from tests.ops.conftest import PrivateRedis, free_port, serve


def write_stream_status(client: redis.Redis, settings: Settings, age_ms: int) -> None:
    now = int(time.time() * 1000)
    status = {"stream": "market", "connected": True, "lastMessageTs": now - age_ms}
    client.hset(settings.key(STATUS_KEY), "market", orjson.dumps(status))


def test_redis_check_follows_a_redis_that_stops_and_comes_back(
    settings: Settings, private_redis: PrivateRedis
) -> None:
    probes = Probes(settings.model_copy(update={"redis_url": private_redis.url}))
    try:
        assert probes.check_redis().ok
        private_redis.stop()
        down = probes.check_redis()
        assert not down.ok and "unreachable" in down.detail
        private_redis.start()
        assert probes.check_redis().ok
    finally:
        probes.close()


def test_postgres_check_is_false_on_a_wrong_port_and_true_on_the_right_one(
    settings: Settings,
) -> None:
    wrong = settings.database_url.replace(":5432/", f":{free_port()}/")
    assert wrong != settings.database_url
    bad, good = Probes(settings.model_copy(update={"database_url": wrong})), Probes(settings)
    try:
        assert not bad.check_postgres().ok
        assert good.check_postgres().ok
    finally:
        bad.close()
        good.close()


def test_ready_goes_503_when_the_streamer_is_stale_and_200_when_everything_is_back(
    settings: Settings, redis_client: redis.Redis
) -> None:
    own = settings.model_copy(update={"redis_prefix": f"{settings.redis_prefix}ready:"})
    # Everything /ready looks at, faked where a process would write it: a fresh stream, a
    # scheduler leader, a live consumer; the exchange check points at this API's own /health.
    port = free_port()
    own = own.model_copy(update={"sim_url": f"http://127.0.0.1:{port}/unused"})
    hb = f"{own.dramatiq_namespace}:__heartbeats__"

    async def check(session: ClientSession, base: str) -> list[tuple[int, dict[str, Any]]]:
        out = []
        for age in (60_000, 100):
            write_stream_status(redis_client, own, age)
            async with session.get(f"{base}/ready") as response:
                out.append((response.status, await response.json()))
        return out

    redis_client.set(own.key(LEADER_KEY), "test-leader", px=60_000)
    redis_client.zadd(hb, {"test-broker": int(time.time() * 1000) + 60_000})
    try:
        (stale_status, stale), (fresh_status, fresh) = serve(own, check)
    finally:
        redis_client.zrem(hb, "test-broker")
    assert stale_status == 503 and stale["ready"] is False
    assert stale["checks"]["streamer"]["ok"] is False
    assert stale["checks"]["redis"]["ok"] and stale["checks"]["postgres"]["ok"]
    assert stale["checks"]["scheduler"]["ok"] and stale["checks"]["workers"]["ok"]
    # Only the exchange (nothing on that port) keeps it false now; the streamer is back.
    assert fresh["checks"]["streamer"]["ok"] is True
    assert fresh_status == 503 and fresh["checks"]["exchange"]["ok"] is False
    assert [name for name, c in fresh["checks"].items() if not c["ok"]] == ["exchange"]


def test_ready_is_200_when_every_check_passes(
    settings: Settings, redis_client: redis.Redis
) -> None:
    from pms.sim.runner import SimServer

    own = settings.model_copy(update={"redis_prefix": f"{settings.redis_prefix}ready2:"})
    hb = f"{own.dramatiq_namespace}:__heartbeats__"
    with SimServer(seed=1, symbols=("BTCUSDT",), paused=True) as sim:
        own = own.model_copy(update={"sim_url": sim.url})
        write_stream_status(redis_client, own, 50)
        redis_client.set(own.key(LEADER_KEY), "test-leader", px=60_000)
        redis_client.zadd(hb, {"test-broker-2": int(time.time() * 1000) + 60_000})

        async def check(session: ClientSession, base: str) -> tuple[int, dict[str, Any]]:
            async with session.get(f"{base}/ready") as response:
                return response.status, await response.json()

        try:
            status, body = serve(own, check)
        finally:
            redis_client.zrem(hb, "test-broker-2")
    assert status == 200, body
    assert body["ready"] is True
