"""Actor module for the crash-redelivery test: ``pms worker --module tests.messaging.kill_actors``.

``slow_job``: the first attempt records its worker's process group and hangs (the test
SIGKILLs that group); later attempts finish and record the completion once per run in a Redis
list.
"""

from __future__ import annotations

import os
import time
from typing import Any

import dramatiq
import redis

from workers.broker import broker, settings

_client = redis.Redis.from_url(settings.redis_url)


@dramatiq.actor(broker=broker, queue_name="pms.trading", max_retries=0)
def slow_job(command: dict[str, Any]) -> None:
    job = command["requestId"]
    attempt = _client.incr(settings.key(f"test:attempts:{job}"))
    if attempt == 1:
        # Before "started": the test reads the group as soon as it sees the start.
        _client.set(settings.key(f"test:group:{job}"), os.getpgrp())
    _client.rpush(settings.key(f"test:started:{job}"), attempt)
    if attempt == 1:
        time.sleep(120)  # killed here
    _client.rpush(settings.key(f"test:done:{job}"), attempt)
