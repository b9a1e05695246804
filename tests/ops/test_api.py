"""The dashboard answers with the queues that exist; the token guards all but /health."""

from __future__ import annotations

import time
import uuid
from typing import Any

import redis
from aiohttp import ClientSession
from pydantic import SecretStr

from pms.config import Settings
from pms.messaging import wire
from pms.messaging.wire import QUEUES
from tests.ops.conftest import serve


def test_dashboard_lists_every_queue_and_shows_a_waiting_message(
    settings: Settings, redis_client: redis.Redis
) -> None:
    own = settings.model_copy(update={"dramatiq_namespace": f"dash-{uuid.uuid4().hex[:8]}"})
    wire.send(
        redis_client,
        own.dramatiq_namespace,
        "ping",
        {"requestId": "dash-1"},
        timestamp_ms=int(time.time() * 1000),
    )

    async def check(session: ClientSession, base: str) -> dict[str, Any]:
        pages = {}
        for path in (
            "/dashboard/",
            "/dashboard/queues/pms.trading",
            "/dashboard/queues/pms.risk/failed",
            "/dashboard/queues/pms.sync/delayed",
        ):
            async with session.get(base + path) as response:
                pages[path] = (response.status, await response.text())
        async with session.get(f"{base}/status") as response:
            pages["/status"] = (response.status, await response.json())
        async with session.get(f"{base}/metrics") as response:
            pages["/metrics"] = (response.status, await response.text())
        return pages

    try:
        pages = serve(own, check)
    finally:
        for key in redis_client.scan_iter(match=f"{own.dramatiq_namespace}:*"):
            redis_client.delete(key)
    status, html = pages["/dashboard/"]
    assert status == 200
    for queue in QUEUES:
        assert queue in html
    status, html = pages["/dashboard/queues/pms.trading"]
    assert status == 200 and "ping" in html
    assert pages["/dashboard/queues/pms.risk/failed"][0] == 200
    assert pages["/dashboard/queues/pms.sync/delayed"][0] == 200
    status, body = pages["/status"]
    assert status == 200 and body["queues"]["pms.trading"]["ready"] == 1
    status, text = pages["/metrics"]
    assert status == 200
    assert 'pms_queue_messages{queue="pms.trading",state="ready"} 1.0' in text
    assert "pms_sub_accounts" in text and "pms_workers_alive" in text


def test_the_token_protects_everything_but_health(settings: Settings) -> None:
    own = settings.model_copy(update={"api_token": SecretStr("s3cret-token")})

    async def check(session: ClientSession, base: str) -> dict[str, int]:
        codes = {}
        for name, path, headers in (
            ("health", "/health", {}),
            ("status-anonymous", "/status", {}),
            ("status-wrong", "/status", {"Authorization": "Bearer nope"}),
            ("status-bearer", "/status", {"Authorization": "Bearer s3cret-token"}),
            ("dashboard-anonymous", "/dashboard/", {}),
            ("metrics-anonymous", "/metrics", {}),
        ):
            async with session.get(base + path, headers=headers) as response:
                codes[name] = response.status
        async with session.get(f"{base}/dashboard/?token=s3cret-token") as response:
            codes["dashboard-query"] = response.status
        async with session.get(f"{base}/dashboard/") as response:  # the cookie now
            codes["dashboard-cookie"] = response.status
        return codes

    codes = serve(own, check)
    assert codes == {
        "health": 200,
        "status-anonymous": 401,
        "status-wrong": 401,
        "status-bearer": 200,
        "dashboard-anonymous": 401,
        "metrics-anonymous": 401,
        "dashboard-query": 200,
        "dashboard-cookie": 200,
    }
