"""After a commit: publish the events of what happened and refresh the position cache.

Events are published only after the transaction that made them true has committed, so a
subscriber never sees something that was rolled back.
"""

from __future__ import annotations

from typing import Any

import orjson
import redis

from pms.execution.booking import Booked
from pms.messaging.events import EventPublisher, EventType

POS_KEY = "pms:pos:"


class Notifier:
    def __init__(self, events: EventPublisher, client: redis.Redis, *, prefix: str = "") -> None:
        self._events = events
        self._client = client
        self._prefix = prefix

    def booked(self, booked: Booked) -> None:
        self._events.publish_many(booked.events)
        self.positions(booked.sub_account_id, booked.open_positions)

    def order(self, view: dict[str, Any]) -> None:
        self._events.publish(EventType.ORDER_UPDATE, int(view["subAccountId"]), view)

    def event(self, type_: EventType, sub_account_id: int | None, data: dict[str, Any]) -> None:
        self._events.publish(type_, sub_account_id, data)

    def positions(self, sub_account_id: int, positions: list[dict[str, Any]]) -> None:
        """``pms:pos:{subAccountId}``: the sub-account's open positions (a cache of Postgres)."""
        key = f"{self._prefix}{POS_KEY}{sub_account_id}"
        self._client.set(
            key, orjson.dumps({"subAccountId": sub_account_id, "positions": positions})
        )
