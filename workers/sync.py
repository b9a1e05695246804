"""``pms.sync`` actors: order-sync, position-sync and funding settlement, enqueued by the
scheduler (order-sync also by the streamer after a user-stream reconnect). Idempotent: running
one twice is harmless."""

from __future__ import annotations

from typing import Any

import structlog

from pms.funding.settle import settle_funding as run_funding
from pms.sync.orders import sync_orders as run_order_sync
from pms.sync.positions import sync_positions as run_position_sync
from workers.actors import command_actor
from workers.context import app

log = structlog.get_logger(__name__)
SYNC = command_actor("pms.sync", time_limit_ms=300_000, max_age_ms=600_000)


@SYNC
def sync_orders(command: dict[str, Any]) -> None:
    report = run_order_sync(app(), command.get("symbol"))
    log.info("order-sync done", reason=command.get("reason"), **report.as_dict())


@SYNC
def sync_positions(command: dict[str, Any]) -> None:
    drifts = run_position_sync(app())
    log.info("position-sync done", reason=command.get("reason"), drifts=len(drifts))


@SYNC
def settle_funding(command: dict[str, Any]) -> None:
    report = run_funding(app(), command.get("symbol"))
    log.info("funding settlement done", reason=command.get("reason"), **report.as_dict())
