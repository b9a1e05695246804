"""After a commit: publish the events of what happened and refresh the position cache.

Events are published only after the transaction that made them true has committed, so a
subscriber never sees something that was rolled back.
"""

from __future__ import annotations

from collections.abc import Iterable
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
        """The booking's events and the refreshed position cache, in one MULTI."""
        self.booked_many([booked])

    def booked_many(self, bookings: Iterable[Booked]) -> None:
        """Several bookings' events (in order) and position caches, in one MULTI."""
        bookings = list(bookings)
        if not bookings:
            return
        pipe = self._client.pipeline(transaction=True)
        self._events.add_to(pipe, [event for booked in bookings for event in booked.events])
        latest = {booked.sub_account_id: booked for booked in bookings}  # the last is current
        for sub_account_id, booked in latest.items():
            pipe.set(self._positions_key(sub_account_id), self._positions_doc(booked))
        pipe.execute()

    def order(self, view: dict[str, Any]) -> None:
        self._events.publish(EventType.ORDER_UPDATE, int(view["subAccountId"]), view)

    def event(self, type_: EventType, sub_account_id: int | None, data: dict[str, Any]) -> None:
        self._events.publish(type_, sub_account_id, data)

    def risk_inputs_changed(self, sub_account_id: int) -> None:
        """The account's rules or status changed outside a booking: the monitor reloads it."""
        self._events.risk_inputs_changed(sub_account_id)

    def _positions_key(self, sub_account_id: int) -> str:
        """``pms:pos:{subAccountId}``: the sub-account's open positions (a cache of Postgres)."""
        return f"{self._prefix}{POS_KEY}{sub_account_id}"

    @staticmethod
    def _positions_doc(booked: Booked) -> bytes:
        return orjson.dumps(
            {"subAccountId": booked.sub_account_id, "positions": booked.open_positions}
        )
