"""The command message on Redis, exactly as a producer in any language writes it.

A command is a standard Dramatiq message (see ``docs/wire-format.md``)::

    {"queue_name":"pms.trading","actor_name":"ping","args":[{"requestId":"r1"}],"kwargs":{},
     "options":{"redis_message_id":"6f0c…"},"message_id":"0b7e…","message_timestamp":1767225600000}

It is enqueued as stock Dramatiq enqueues it, in one MULTI: ``HSET ns:Q.msgs rid payload``
then ``RPUSH ns:Q rid``. The RPUSH itself wakes an idle consumer of
:class:`pms.messaging.broker.FastRedisBroker`, which waits in a ``BLMOVE`` on ``ns:Q``.

JSON is produced by orjson; ``Decimal`` is encoded as a string, never as a float.
"""

from __future__ import annotations

import decimal
import uuid
from collections.abc import Mapping
from typing import Any

import dramatiq
import orjson
import redis
from dramatiq.errors import DecodeError

#: SPEC §3.2: which queue each gateway command goes to.
ACTOR_QUEUES: Mapping[str, str] = {
    **{
        name: "pms.trading"
        for name in (
            "ping",
            "place_market_order",
            "place_limit_order",
            "cancel_order",
            "cancel_all_orders",
            "close_position",
            "set_leverage",
        )
    },
    **{
        name: "pms.accounts"
        for name in (
            "create_sub_account",
            "deposit",
            "withdraw",
            "update_risk_rules",
            "freeze_sub_account",
            "unfreeze_sub_account",
        )
    },
    **{
        name: "pms.algo"
        for name in (
            "start_chase",
            "cancel_chase",
            "start_scalper",
            "cancel_scalper",
            "start_twap",
            "pause_twap",
            "resume_twap",
            "cancel_twap",
            "start_trail_stop",
            "cancel_trail_stop",
            "place_basket",
            "cancel_basket",
        )
    },
}

QUEUES: tuple[str, ...] = ("pms.trading", "pms.accounts", "pms.algo", "pms.risk", "pms.sync")


def _default(obj: Any) -> Any:
    if isinstance(obj, decimal.Decimal):
        return str(obj)
    raise TypeError(f"not JSON serializable: {type(obj).__name__}")


def dumps(obj: Any) -> bytes:
    """Compact JSON; ``Decimal`` → string (never float)."""
    return orjson.dumps(obj, default=_default)


def loads(data: bytes | str) -> Any:
    return orjson.loads(data)


class OrjsonEncoder(dramatiq.Encoder):
    """Dramatiq's message encoder on orjson: faster, and ``Decimal`` becomes a string."""

    def encode(self, data: dict[str, Any]) -> bytes:
        return dumps(data)

    def decode(self, data: bytes) -> dict[str, Any]:
        try:
            decoded: dict[str, Any] = orjson.loads(data)
        except orjson.JSONDecodeError as exc:
            raise DecodeError(f"failed to decode message {data!r}", data, exc) from None  # type: ignore[no-untyped-call]
        return decoded


def queue_key(namespace: str, queue_name: str) -> str:
    return f"{namespace}:{queue_name}"


def msgs_key(namespace: str, queue_name: str) -> str:
    return f"{namespace}:{queue_name}.msgs"


def queue_for(actor_name: str) -> str:
    try:
        return ACTOR_QUEUES[actor_name]
    except KeyError:
        raise ValueError(f"unknown actor {actor_name!r}: give its queue explicitly") from None


def build_message(
    actor_name: str,
    command: Mapping[str, Any],
    *,
    timestamp_ms: int,
    queue_name: str | None = None,
    message_id: str | None = None,
    redis_message_id: str | None = None,
    options: Mapping[str, Any] | None = None,
) -> dict[str, Any]:
    """The message dict, field for field what Dramatiq (and the Node client) writes."""
    return {
        "queue_name": queue_name or queue_for(actor_name),
        "actor_name": actor_name,
        "args": [dict(command)],
        "kwargs": {},
        "options": {**(options or {}), "redis_message_id": redis_message_id or str(uuid.uuid4())},
        "message_id": message_id or str(uuid.uuid4()),
        "message_timestamp": timestamp_ms,
    }


def enqueue_raw(
    pipe: redis.client.Pipeline,
    namespace: str,
    queue_name: str,
    redis_message_id: str,
    payload: bytes,
) -> None:
    """Queue the enqueue commands on ``pipe`` (a MULTI pipeline); the caller executes it."""
    pipe.hset(msgs_key(namespace, queue_name), redis_message_id, payload)
    pipe.rpush(queue_key(namespace, queue_name), redis_message_id)


def enqueue_fast(
    client: redis.Redis,
    namespace: str,
    queue_name: str,
    redis_message_id: str,
    payload: bytes,
) -> None:
    """What :func:`enqueue_raw` + ``execute()`` does: one MULTI, one round trip."""
    pipe = client.pipeline(transaction=True)
    enqueue_raw(pipe, namespace, queue_name, redis_message_id, payload)
    pipe.execute()


def send(
    client: redis.Redis,
    namespace: str,
    actor_name: str,
    command: Mapping[str, Any],
    *,
    timestamp_ms: int,
    queue_name: str | None = None,
    message_id: str | None = None,
) -> dict[str, Any]:
    """Enqueue ``command`` for ``actor_name`` as any producer would; returns the message dict.

    ``message_id`` is a fresh uuid unless given: a retried requestId must still be a distinct
    message, since Dramatiq tracks in-flight messages by ``message_id``.
    """
    message = build_message(
        actor_name,
        command,
        timestamp_ms=timestamp_ms,
        queue_name=queue_name,
        message_id=message_id,
    )
    enqueue_fast(
        client,
        namespace,
        message["queue_name"],
        message["options"]["redis_message_id"],
        dumps(message),
    )
    return message
