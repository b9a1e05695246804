"""System actors: ``ping`` (queue ``pms.trading``)."""

from __future__ import annotations

from typing import Any

import dramatiq
import structlog

from pms.messaging import results as result_shapes
from workers.broker import clock, results

log = structlog.get_logger(__name__)


@dramatiq.actor(queue_name="pms.trading", max_retries=0)
def ping(command: dict[str, Any]) -> None:
    """Answers ``{"pong": true, "ts": <engine ms>}``: the gateway's liveness round trip."""
    request_id = command.get("requestId")
    if not isinstance(request_id, str) or not request_id or len(request_id) > 64:
        log.warning("ping without a valid requestId", command=command)
        return
    results.put(request_id, result_shapes.ok(request_id, {"pong": True, "ts": clock.ms()}))
    log.debug("pong", requestId=request_id)
