"""Events (SPEC §3.4): ``PUBLISH pms:events:{type}`` + ``XADD pms:events`` (capped).

Envelope, compact JSON in the stream entry's single field ``event``::

    {"v":1,"type":"order_update","ts":1767225600000,"subAccountId":12,"data":{...}}

A gateway that reconnects reads the stream from the last id it saw (``XREAD STREAMS
pms:events <id>``) to replay what it missed, then keeps reading (or subscribes).
"""

from __future__ import annotations

import enum
from collections.abc import Iterable, Mapping
from typing import Any

import redis
import structlog

from pms.clock import Clock
from pms.messaging import wire

log = structlog.get_logger(__name__)

EVENTS_STREAM = "pms:events"
EVENTS_CHANNEL = "pms:events:"
DEFAULT_STREAM_MAXLEN = 100_000


class EventType(enum.StrEnum):
    ORDER_UPDATE = "order_update"
    TRADE_FILL = "trade_fill"
    POSITION_UPDATE = "position_update"
    BALANCE_UPDATE = "balance_update"
    RISK_UPDATE = "risk_update"
    MARGIN_CALL = "margin_call"
    LIQUIDATION = "liquidation"
    ALGO_UPDATE = "algo_update"
    POSITION_DRIFT = "position_drift"
    STREAM_STATUS = "stream_status"


EVENT_TYPES: frozenset[str] = frozenset(t.value for t in EventType)


def envelope(
    type_: EventType | str, sub_account_id: int | str | None, data: Mapping[str, Any], ts_ms: int
) -> dict[str, Any]:
    kind = EventType(type_)  # unknown types are a programming error: ValueError
    return {"v": 1, "type": kind.value, "ts": ts_ms, "subAccountId": sub_account_id, "data": data}


class EventPublisher:
    def __init__(
        self,
        client: redis.Redis,
        clock: Clock,
        *,
        prefix: str = "",
        maxlen: int = DEFAULT_STREAM_MAXLEN,
        approximate: bool = True,
    ) -> None:
        self._client = client
        self._clock = clock
        self._prefix = prefix
        self._maxlen = maxlen
        self._approximate = approximate
        self.stream = f"{prefix}{EVENTS_STREAM}"

    def channel(self, type_: EventType | str) -> str:
        return f"{self._prefix}{EVENTS_CHANNEL}{EventType(type_).value}"

    def publish(
        self, type_: EventType | str, sub_account_id: int | str | None, data: Mapping[str, Any]
    ) -> str:
        """Publish one event; returns its stream id."""
        return self.publish_many([(type_, sub_account_id, data)])[0]

    def publish_many(
        self, events: Iterable[tuple[EventType | str, int | str | None, Mapping[str, Any]]]
    ) -> list[str]:
        """Publish several events in one MULTI (in order, one ``ts``); returns stream ids."""
        pipe = self._client.pipeline(transaction=True)
        count = self.add_to(pipe, events)
        if not count:
            return []
        replies = pipe.execute()
        return self._stream_ids(replies[: 2 * count])

    def add_to(
        self,
        pipe: redis.client.Pipeline,
        events: Iterable[tuple[EventType | str, int | str | None, Mapping[str, Any]]],
    ) -> int:
        """Queue the events' PUBLISH + XADD pairs on ``pipe`` (first, in order); returns how
        many. The caller executes the pipeline, whose first ``2 * n`` replies are theirs."""
        ts = self._clock.ms()
        count = 0
        for type_, sub_account_id, data in events:
            env = envelope(type_, sub_account_id, data, ts)
            payload = wire.dumps(env)
            pipe.publish(self.channel(env["type"]), payload)
            pipe.xadd(
                self.stream,
                {"event": payload},
                maxlen=self._maxlen,
                approximate=self._approximate,
            )
            count += 1
        if count:
            log.debug("events published", count=count)
        return count

    @staticmethod
    def _stream_ids(replies: list[Any]) -> list[str]:
        return [r.decode() if isinstance(r, bytes) else str(r) for r in replies[1::2]]

    def read(self, from_id: str = "0", count: int = 1000) -> list[tuple[str, dict[str, Any]]]:
        """Events after ``from_id`` (exclusive), oldest first: ``[(id, envelope)]``."""
        reply: Any = self._client.xread({self.stream: from_id}, count=count)
        out: list[tuple[str, dict[str, Any]]] = []
        for _stream, entries in reply or []:
            for entry_id, fields in entries:
                eid = entry_id.decode() if isinstance(entry_id, bytes) else str(entry_id)
                out.append((eid, wire.loads(fields[b"event"])))
        return out
