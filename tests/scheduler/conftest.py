"""Scheduler fixtures: a Settings copy with a private Redis prefix/namespace, cleaned up after."""

from __future__ import annotations

import uuid
from collections.abc import Iterator

import pytest
import redis

from pms.config import Settings


@pytest.fixture
def own(settings: Settings) -> Iterator[Settings]:
    ns = f"sched-{uuid.uuid4().hex[:8]}"
    copy = settings.model_copy(
        update={"dramatiq_namespace": ns, "redis_prefix": f"{settings.redis_prefix}{ns}:"}
    )
    yield copy
    plain = redis.Redis.from_url(copy.redis_url)
    for pattern in (f"{copy.redis_prefix}*", f"{ns}*"):
        for key in plain.scan_iter(match=pattern):
            plain.delete(key)
    plain.close()
