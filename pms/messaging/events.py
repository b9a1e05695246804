"""Events (SPEC §3.4): ``PUBLISH pms:events:{type}`` + ``XADD pms:events`` (capped).

Envelope, compact JSON in the stream entry's single field ``event``::

    {"v":1,"type":"order_update","ts":1767225600000,"subAccountId":12,"data":{...}}

A gateway that reconnects reads the stream from the last id it saw (``XREAD STREAMS
pms:events <id>``) to replay what it missed, then keeps reading (or subscribes).

``data`` is a mapping, or JSON already written (an ``orjson.Fragment``, embedded as is: the
risk pass publishes the document it has just rendered without parsing it back).
"""

from __future__ import annotations

import enum
from collections.abc import Iterable, Mapping
from typing import Any

import orjson
import redis
import structlog

from pms.clock import Clock
from pms.messaging import resp, wire

log = structlog.get_logger(__name__)

EVENTS_STREAM = "pms:events"
EVENTS_CHANNEL = "pms:events:"
DEFAULT_STREAM_MAXLEN = 100_000
# Not an event of SPEC §3.4: the risk monitor's own signal that a sub-account's risk inputs
# changed outside a booking (its rules, its status), so it reloads the account at once.
# Message: ``{"subAccountId": id}``, as the booking events name theirs.
RISK_INPUTS_CHANNEL = "pms:risk:inputs"
SEND_PIECE = 64 * 1024  # bytes per write of a framed burst (under malloc's mmap threshold)


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

EventData = Mapping[str, Any] | orjson.Fragment
Event = tuple[EventType | str, int | str | None, EventData]


def envelope(
    type_: EventType | str, sub_account_id: int | str | None, data: EventData, ts_ms: int
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
        self._heads: dict[str, tuple[bytes, bytes]] = {}  # event type -> _frames

    def channel(self, type_: EventType | str) -> str:
        return f"{self._prefix}{EVENTS_CHANNEL}{EventType(type_).value}"

    @property
    def risk_inputs_channel(self) -> str:
        return f"{self._prefix}{RISK_INPUTS_CHANNEL}"

    def risk_inputs_changed(self, sub_account_id: int) -> None:
        """Tell the risk monitor to reload this account (see ``RISK_INPUTS_CHANNEL``)."""
        self._client.publish(
            self.risk_inputs_channel, orjson.dumps({"subAccountId": sub_account_id})
        )

    def publish(
        self, type_: EventType | str, sub_account_id: int | str | None, data: EventData
    ) -> str:
        """Publish one event; returns its stream id."""
        return self.publish_many([(type_, sub_account_id, data)])[0]

    def publish_many(self, events: Iterable[Event]) -> list[str]:
        """Publish several events in one MULTI (in order, one ``ts``); returns stream ids.

        The MULTI is framed here and sent on one connection (in pieces), its replies read
        back (one round trip): for a burst (the risk pass's first ``risk_update``s, hundreds
        of events) redis-py's pipeline costs ~2.5x as much, packing and parsing each command
        in Python. The commands are exactly those of :meth:`add_to`. A dropped connection
        (Redis restarted) falls back to the client's pipeline, which reconnects and retries
        as redis-py always did, so a MULTI whose reply was lost may be published twice.
        """
        payloads = self._payloads(events)
        if not payloads:
            return []
        try:
            replies = self._send_framed(payloads)
        except (redis.ConnectionError, redis.TimeoutError):
            log.warning("event publish failed; retrying through the client", count=len(payloads))
            pipe = self._client.pipeline(transaction=True)
            self._queue(pipe, payloads)
            replies = pipe.execute()
        return self._stream_ids(replies)

    def add_to(self, pipe: redis.client.Pipeline, events: Iterable[Event]) -> int:
        """Queue the events' PUBLISH + XADD pairs on ``pipe`` (first, in order); returns how
        many. The caller executes the pipeline, whose first ``2 * n`` replies are theirs."""
        payloads = self._payloads(events)
        self._queue(pipe, payloads)
        return len(payloads)

    def _payloads(self, events: Iterable[Event]) -> list[tuple[str, bytes]]:
        """Each event's type and envelope (compact JSON), all with one ``ts``."""
        ts = self._clock.ms()
        dumps = wire.dumps
        out = []
        for type_, sub_account_id, data in events:
            env = envelope(type_, sub_account_id, data, ts)
            out.append((env["type"], dumps(env)))
        if out:
            log.debug("events published", count=len(out))
        return out

    def _queue(self, pipe: redis.client.Pipeline, payloads: list[tuple[str, bytes]]) -> None:
        for kind, payload in payloads:
            pipe.publish(self.channel(kind), payload)
            pipe.xadd(
                self.stream,
                {"event": payload},
                maxlen=self._maxlen,
                approximate=self._approximate,
            )

    def _frames(self, kind: str) -> tuple[bytes, bytes]:
        """The RESP heads of ``PUBLISH channel`` and ``XADD stream MAXLEN [~] n * event``,
        each waiting for the payload as its last argument (redis-py's own argument order)."""
        frames = self._heads.get(kind)
        if frames is None:
            trim = [b"MAXLEN", b"~"] if self._approximate else [b"MAXLEN"]
            xadd = [b"XADD", self.stream.encode(), *trim, str(self._maxlen).encode(), b"*"]
            publish = [b"PUBLISH", self.channel(kind).encode()]
            frames = self._heads[kind] = (resp.head(publish), resp.head([*xadd, b"event"]))
        return frames

    def _packed(self, payloads: list[tuple[str, bytes]]) -> list[bytes]:
        """``MULTI``, every PUBLISH + XADD, ``EXEC``: the bytes redis-py would send, in
        pieces of about ``SEND_PIECE`` bytes.

        Each payload is copied once per command, into its piece: a burst of 600
        ``risk_update``s is ~1.6 MB, and one buffer that size is a fresh mmap every time
        (each page a fault), where pieces under malloc's mmap threshold reuse the heap.
        """
        pieces = []
        parts = [b"*1\r\n$5\r\nMULTI\r\n"]
        size = 0
        for kind, payload in payloads:
            publish, xadd = self._frames(kind)
            length = b"$%d\r\n" % len(payload)
            parts += (publish, length, payload, b"\r\n", xadd, length, payload, b"\r\n")
            size += 2 * len(payload)
            if size >= SEND_PIECE:
                pieces.append(b"".join(parts))
                parts.clear()
                size = 0
        parts.append(b"*1\r\n$4\r\nEXEC\r\n")
        pieces.append(b"".join(parts))
        return pieces

    def _send_framed(self, payloads: list[tuple[str, bytes]]) -> list[Any]:
        """The MULTI on one connection, one round trip; the EXEC's replies."""
        # Replies: "OK", a "QUEUED" per command, then the EXEC's.
        count = 2 * len(payloads) + 2
        replies: Any = resp.round_trip(self._client, self._packed(payloads), count)[-1]
        if replies is None:
            raise redis.ResponseError("EXEC returned nil: the MULTI was discarded")
        for reply in replies:
            if isinstance(reply, redis.ResponseError):
                raise reply  # as redis-py's pipeline does (the other commands did run)
        return list(replies)

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
