"""A Dramatiq Redis broker whose consumers block on a wake-up signal instead of sleeping.

Stock ``RedisBroker`` consumers poll: an empty fetch sleeps with exponential backoff up to
``worker_timeout`` (1 s), so enqueue → actor start is milliseconds to hundreds of ms. This
broker keeps everything else of Dramatiq (wire format, the Lua ``dispatch`` script, ack sets,
heartbeats, dead letters, the dashboard) and changes two things:

**Wake-up.** Every enqueue (ours, the Node client's, a re-queue, a redelivery) is one MULTI:
``HSET ns:Q.msgs`` + ``RPUSH ns:Q`` + ``PUBLISH ns:Q.wake 1``. Each consumer keeps one
subscription to ``ns:Q.wake``. It fetches first (the stock Lua ``dispatch``: LPOP, ack set,
HMGET); when that is empty it waits on the subscription socket for at most
``fallback_poll_ms`` (50 ms, a client-side ``select``, exact) and fetches again as soon as a
signal arrives. A signal published while the consumer is busy stays buffered on its socket, so
no wake-up is lost; buffered signals are drained before each fetch so a burst costs one fetch.
A producer that writes only HSET + RPUSH is served by the fallback poll (1 s on delay queues,
which only Dramatiq itself feeds). A consumer whose
prefetch is full ignores signals and waits for one of its own acks instead.

Why not ``BLPOP`` on a wake list: Redis checks blocking timeouts in its cron (``hz`` 10), so a
50 ms ``BLPOP`` returns after 100-140 ms; the fallback would not be ≤ 50 ms. Pub/sub also
leaves nothing to accumulate when no consumer runs.

**Crash redelivery.** The stock lottery maintenance (1 in 1000 calls, calling queue only,
``heartbeat_timeout`` 60 s) is disabled. Instead each process runs :data:`MAINT_SCRIPT`
every ``maintenance_interval_ms`` (1 s): it refreshes this process's heartbeat, and for every
broker silent for ``heartbeat_timeout_ms`` (5 s) re-queues (with wake tokens) its
unacked messages on *every declared queue* and its delay queue, then forgets it. It never
calls ``KEYS``. All processes of a namespace must declare the same queues
(``workers.broker`` does). A SIGKILLed worker's command is redelivered ~5-6 s later.
"""

from __future__ import annotations

import collections
import contextlib
import threading
import time
from collections.abc import Iterable, Sequence
from typing import Any

import dramatiq
import redis
import structlog
from dramatiq.brokers.redis import DEFAULT_DEAD_MESSAGE_TTL, RedisBroker
from dramatiq.common import current_millis, dq_name, q_name
from dramatiq.errors import ConnectionClosed, DecodeError
from dramatiq.message import Message
from dramatiq.middleware import Middleware

from pms.config import Settings
from pms.messaging import wire

log = structlog.get_logger(__name__)

DEFAULT_HEARTBEAT_TIMEOUT_MS = 5_000
DEFAULT_MAINTENANCE_INTERVAL_MS = 1_000
DEFAULT_FALLBACK_POLL_MS = 50
# Delay queues (``Q.DQ``) are fed by Dramatiq itself, always through ``do_enqueue`` (which
# publishes the wake signal), so their fallback poll only paces the consumer thread's check of
# due delayed messages: once a second is enough and keeps idle consumers off the CPU.
DELAY_QUEUE_POLL_MS = 1_000

# KEYS[1] = namespace
# ARGV = now_ms, broker_id, heartbeat_timeout_ms, dead_message_ttl_ms, (unused), queue...
MAINT_SCRIPT = """
local ns = KEYS[1]
local now = tonumber(ARGV[1])
local hb = ns .. ":__heartbeats__"
redis.call("zadd", hb, now, ARGV[2])
local requeued = 0
local dead = redis.call("zrangebyscore", hb, 0, now - tonumber(ARGV[3]), "LIMIT", 0, 100)
for i = 1, #dead do
  local w = dead[i]
  for j = 6, #ARGV do
    local q = ARGV[j]
    local acks = ns .. ":__acks__." .. w .. "." .. q
    local ids = redis.call("smembers", acks)
    if #ids > 0 then
      local qk = ns .. ":" .. q
      local mk = qk .. ".msgs"
      local n = 0
      for _, id in ipairs(ids) do
        if redis.call("hexists", mk, id) == 1 then
          redis.call("rpush", qk, id)
          n = n + 1
        end
      end
      redis.call("del", acks)
      if n > 0 then
        redis.call("publish", qk .. ".wake", "1")
        requeued = requeued + n
      end
    end
  end
  redis.call("zrem", hb, w)
end
local ttl = tonumber(ARGV[4])
for j = 6, #ARGV do
  local q = ARGV[j]
  if string.sub(q, -3) ~= ".DQ" then
    local xq = ns .. ":" .. q .. ".XQ"
    local old = redis.call("zrangebyscore", xq, 0, now - ttl, "LIMIT", 0, 200)
    for _, id in ipairs(old) do
      redis.call("zrem", xq, id)
      redis.call("hdel", xq .. ".msgs", id)
    end
  end
end
return requeued
"""

# The stock dispatch ``fetch`` (LPOP, SADD to the ack set, HMGET) without the stock script's
# per-call preamble (heartbeat ZADD, eight arguments, key building in Lua): the heartbeat is
# MAINT_SCRIPT's job. Same keys, same ack-set semantics, so acks, nacks, the sweep and the
# dashboard see exactly what the stock fetch leaves behind.
# KEYS = queue list, ack set, message hash; ARGV = count
FETCH_SCRIPT = """
local ids = redis.call("lpop", KEYS[1], ARGV[1])
if not ids then return {} end
redis.call("sadd", KEYS[2], unpack(ids))
return redis.call("hmget", KEYS[3], unpack(ids))
"""


class FastRedisBroker(RedisBroker):
    """``RedisBroker`` with wake-up consumers and deterministic crash redelivery.

    Construct it with :func:`build_broker`.
    """

    def __init__(
        self,
        *,
        client: redis.Redis,
        namespace: str = "dramatiq",
        middleware: list[Middleware] | None = None,
        heartbeat_timeout_ms: int = DEFAULT_HEARTBEAT_TIMEOUT_MS,
        maintenance_interval_ms: int = DEFAULT_MAINTENANCE_INTERVAL_MS,
        fallback_poll_ms: int = DEFAULT_FALLBACK_POLL_MS,
        dead_message_ttl_ms: int = DEFAULT_DEAD_MESSAGE_TTL,
    ) -> None:
        super().__init__(  # type: ignore[no-untyped-call]
            client=client,
            namespace=namespace,
            middleware=middleware,
            heartbeat_timeout=heartbeat_timeout_ms,
            dead_message_ttl=dead_message_ttl_ms,
            maintenance_chance=0,  # replaced by maintain()
        )
        self.fallback_poll_ms = fallback_poll_ms
        self.maintenance_interval_ms = maintenance_interval_ms
        self._maint = self.client.register_script(MAINT_SCRIPT)
        self._fetch = self.client.register_script(FETCH_SCRIPT)
        self._maint_lock = threading.Lock()
        self._next_maint = 0.0

    @property
    def consumer_class(self) -> type[WakeConsumer]:
        return WakeConsumer

    def do_enqueue(self, queue_name: str, message_id: str, data: bytes) -> None:
        wire.enqueue_fast(self.client, self.namespace, queue_name, message_id, data)

    def do_fetch(self, queue_name: str, count: int) -> list[bytes | None]:
        """Move up to ``count`` message ids to this broker's ack set; return their payloads."""
        fetched: list[bytes | None] = self._fetch(
            keys=[
                wire.queue_key(self.namespace, queue_name),
                f"{self.namespace}:__acks__.{self.broker_id}.{queue_name}",
                wire.msgs_key(self.namespace, queue_name),
            ],
            args=[min(count, 1000)],  # unpack() stays far below Lua's stack limit
        )
        return fetched

    def wake(self, queue_name: str) -> None:
        """Signal the consumers of ``queue_name`` that messages are waiting."""
        self.client.publish(wire.wake_channel(self.namespace, queue_name), "1")

    def all_queue_names(self) -> list[str]:
        """Declared queues and their delay queues, sorted."""
        names = set(self.get_declared_queues())
        return sorted(names | {dq_name(q) for q in names})

    def maintain(self, *, force: bool = False) -> int:
        """Heartbeat + re-queue dead brokers' unacked messages; at most once per interval.

        Returns how many messages were re-queued (0 when skipped).
        """
        now = time.monotonic()
        if not force and now < self._next_maint:
            return 0
        if not self._maint_lock.acquire(blocking=False):
            return 0
        try:
            if not force and now < self._next_maint:
                return 0
            self._next_maint = now + self.maintenance_interval_ms / 1000
            requeued: int = self._maint(
                keys=[self.namespace],
                args=[
                    current_millis(),
                    self.broker_id,
                    self.heartbeat_timeout,
                    self.dead_message_ttl,
                    0,
                    *self.all_queue_names(),
                ],
            )
        finally:
            self._maint_lock.release()
        if requeued:
            log.warning("redelivered messages of dead workers", count=requeued)
        return requeued


class WakeConsumer(dramatiq.Consumer):
    """Fetch through the Lua dispatch; when empty, wait for ``ns:Q.wake`` (≤ fallback)."""

    def __init__(self, broker: FastRedisBroker, queue_name: str, prefetch: int, timeout: int):
        self.broker = broker
        self.queue_name = queue_name
        self.prefetch = prefetch
        poll_ms = broker.fallback_poll_ms
        if queue_name.endswith(".DQ"):
            poll_ms = max(poll_ms, DELAY_QUEUE_POLL_MS)
        self.wait_s = max(min(timeout, poll_ms), 1) / 1000
        self.message_cache: collections.deque[bytes | None] = collections.deque()
        self.queued_message_ids: set[str] = set()
        self._room = threading.Event()
        self._wake_channel = wire.wake_channel(broker.namespace, queue_name)
        self._pubsub: redis.client.PubSub | None = None
        self._errors = 0
        # True after a fetch that returned less than it asked for: the queue was empty at that
        # moment, so the next message to arrive brings its own wake token. The consumer then
        # goes straight back to the socket instead of fetching again, which keeps the consumer
        # thread off the GIL while the worker thread starts the message it just handed over.
        self._drained = False

    @property
    def outstanding_message_count(self) -> int:
        return len(self.queued_message_ids) + len(self.message_cache)

    def ack(self, message: dramatiq.MessageProxy) -> None:
        try:
            # The current queue may differ from message.queue_name for delayed messages.
            self.broker.do_ack(self.queue_name, message.options["redis_message_id"])
        except redis.ConnectionError as exc:
            raise ConnectionClosed(exc) from None  # type: ignore[no-untyped-call]
        finally:
            self.queued_message_ids.discard(message.message_id)
            self._room.set()

    def nack(self, message: dramatiq.MessageProxy) -> None:
        try:
            self.broker.do_nack(self.queue_name, message.options["redis_message_id"])
        except redis.ConnectionError as exc:
            raise ConnectionClosed(exc) from None  # type: ignore[no-untyped-call]
        finally:
            self.queued_message_ids.discard(message.message_id)
            self._room.set()

    def requeue(self, messages: Iterable[dramatiq.MessageProxy]) -> None:
        ids = [m.options["redis_message_id"] for m in messages]
        if not ids:
            return
        try:
            self.broker.do_requeue(self.queue_name, *ids)
            self.broker.wake(self.queue_name)
        except redis.ConnectionError as exc:
            raise ConnectionClosed(exc) from None  # type: ignore[no-untyped-call]

    def __next__(self) -> dramatiq.MessageProxy | None:
        try:
            return self._next()
        except (redis.ConnectionError, redis.TimeoutError) as exc:
            # Redis went away (restart, CLIENT KILL, network): back off and keep going rather
            # than letting ConsumerThread drop its in-memory delay queue and sleep 3 s.
            self._errors += 1
            self._drop_subscription()
            delay = min(0.05 * 2**self._errors, 2.0)
            log.warning(
                "consumer lost redis", queue=self.queue_name, error=str(exc), retry_in_s=delay
            )
            time.sleep(delay)
            return None

    def _next(self) -> dramatiq.MessageProxy | None:
        while True:
            if self.message_cache:
                data = self.message_cache.popleft()
                if data is None:  # HMGET of a message deleted under us (dramatiq #266)
                    continue
                try:
                    message = Message.decode(data)
                except DecodeError:
                    self._dead_letter_undecodable(data)
                    continue
                self.queued_message_ids.add(message.message_id)
                return dramatiq.MessageProxy(message)

            self.broker.maintain()
            pubsub = self._subscription()
            if self._drained:
                self._drained = False
                if pubsub.get_message(timeout=self.wait_s) is None:
                    return None  # fallback poll: fetch on the next call
                continue

            self._room.clear()
            room = self.prefetch - self.outstanding_message_count
            if room <= 0:
                # Full: leave wake tokens to idle consumers; wait for one of our acks.
                self._room.wait(self.wait_s)
                return None

            # Signals buffered while we were busy are covered by the fetch below.
            while pubsub.get_message(timeout=0) is not None:
                pass
            fetched: Sequence[bytes | None] = self.broker.do_fetch(self.queue_name, room)
            self._errors = 0
            if fetched:
                self.message_cache.extend(fetched)
                self._drained = len(fetched) < room
                continue

            if pubsub.get_message(timeout=self.wait_s) is None:
                return None  # fallback poll: ConsumerThread checks shutdown and delayed messages

    def _dead_letter_undecodable(self, data: bytes) -> None:
        """A payload that is not a Dramatiq message (hostile or corrupt producer) must not
        stall the consumer nor come back after a restart: find its id among this consumer's
        unacked messages and move it to the dead-letter queue."""
        acks = f"{self.broker.namespace}:__acks__.{self.broker.broker_id}.{self.queue_name}"
        msgs = wire.msgs_key(self.broker.namespace, self.queue_name)
        for raw_id in self.broker.client.smembers(acks):
            if self.broker.client.hget(msgs, raw_id) == data:
                message_id = raw_id.decode() if isinstance(raw_id, bytes) else str(raw_id)
                self.broker.do_nack(self.queue_name, message_id)
                log.error(
                    "undecodable message dead-lettered",
                    queue=self.queue_name,
                    redis_message_id=message_id,
                )
                return
        log.error("undecodable message dropped: its id was not found", queue=self.queue_name)

    def _subscription(self) -> redis.client.PubSub:
        if self._pubsub is None:
            pubsub = self.broker.client.pubsub(ignore_subscribe_messages=True)
            pubsub.subscribe(self._wake_channel)
            self._pubsub = pubsub
        return self._pubsub

    def close(self) -> None:
        self._room.set()
        self._drop_subscription()

    def _drop_subscription(self) -> None:
        if self._pubsub is not None:
            with contextlib.suppress(redis.RedisError):
                self._pubsub.close()
            self._pubsub = None


def build_broker(
    settings: Settings,
    *,
    middleware: list[Middleware] | None = None,
    client: redis.Redis | None = None,
    heartbeat_timeout_ms: int = DEFAULT_HEARTBEAT_TIMEOUT_MS,
    maintenance_interval_ms: int = DEFAULT_MAINTENANCE_INTERVAL_MS,
    fallback_poll_ms: int = DEFAULT_FALLBACK_POLL_MS,
    set_encoder: bool = True,
) -> FastRedisBroker:
    """The engine's broker on ``settings.redis_url`` / ``settings.dramatiq_namespace``.

    ``middleware=None`` means Dramatiq's defaults with ``Retries(max_retries=0)``: a retried
    command is a new risk decision, so actors opt in to retries explicitly. Also installs the
    orjson encoder (Decimal → string) process-wide unless ``set_encoder=False``.
    """
    if middleware is None:
        middleware = default_middleware()
    if set_encoder:
        dramatiq.set_encoder(wire.OrjsonEncoder())
    client = client or make_client(settings.redis_url)
    return FastRedisBroker(
        client=client,
        namespace=settings.dramatiq_namespace,
        middleware=middleware,
        heartbeat_timeout_ms=heartbeat_timeout_ms,
        maintenance_interval_ms=maintenance_interval_ms,
        fallback_poll_ms=fallback_poll_ms,
    )


def make_client(url: str, **kwargs: Any) -> redis.Redis:
    """A Redis client for the messaging layer: bounded socket waits, keepalive, redis-py retries."""
    params: dict[str, Any] = {
        "socket_connect_timeout": 2.0,
        "socket_timeout": 10.0,
        "socket_keepalive": True,
        "health_check_interval": 15,
        **kwargs,
    }
    return redis.Redis.from_url(url, **params)


def default_middleware() -> list[Middleware]:
    from dramatiq.middleware import default_middleware as stock
    from dramatiq.middleware.retries import Retries

    result: list[Middleware] = []
    for cls in stock:
        result.append(Retries(max_retries=0) if cls is Retries else cls())
    return result


def canonical_queue(queue_name: str) -> str:
    """``pms.trading.DQ`` → ``pms.trading``."""
    name: str = q_name(queue_name)
    return name
