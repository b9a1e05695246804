"""How the monitor asks for enforcement: a ``enforce_risk`` message on ``pms.risk``."""

from __future__ import annotations

import uuid

import redis

from pms.clock import Clock
from pms.messaging import wire

ENFORCE_ACTOR = "enforce_risk"
RISK_QUEUE = "pms.risk"


class EnforceSender:
    def __init__(self, client: redis.Redis, namespace: str, clock: Clock) -> None:
        self._client = client
        self._namespace = namespace
        self._clock = clock

    def __call__(self, sub_account_id: int, reason: str) -> None:
        command = {
            "requestId": f"risk-{uuid.uuid4().hex}",
            "subAccountId": sub_account_id,
            "reason": reason,
        }
        wire.send(
            self._client,
            self._namespace,
            ENFORCE_ACTOR,
            command,
            timestamp_ms=self._clock.ms(),
            queue_name=RISK_QUEUE,
        )
