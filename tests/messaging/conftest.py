"""Messaging fixtures: a unique Redis prefix and Dramatiq namespace per test, cleaned after."""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator

import pytest
import redis

from pms.config import Settings, load_settings

REDIS_URL = os.environ.get("PMS_TEST_REDIS_URL", "redis://127.0.0.1:6379/0")
ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


@pytest.fixture
def msg_settings() -> Iterator[Settings]:
    run = f"tm{uuid.uuid4().hex[:10]}"
    settings = load_settings(
        redis_url=REDIS_URL, redis_prefix=f"{run}:", dramatiq_namespace=f"{run}-ns"
    )
    yield settings
    client = redis.Redis.from_url(REDIS_URL)
    keys = list(client.scan_iter(match=f"{run}*", count=1000))
    for i in range(0, len(keys), 500):
        client.delete(*keys[i : i + 500])
    client.close()


@pytest.fixture
def rclient() -> Iterator[redis.Redis]:
    client = redis.Redis.from_url(REDIS_URL)
    yield client
    client.close()


def subprocess_env(settings: Settings) -> dict[str, str]:
    return {
        **os.environ,
        "PMS_REDIS_URL": settings.redis_url,
        "PMS_REDIS_PREFIX": settings.redis_prefix,
        "PMS_DRAMATIQ_NAMESPACE": settings.dramatiq_namespace,
        "PYTHONUNBUFFERED": "1",
    }
