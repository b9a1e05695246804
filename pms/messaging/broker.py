"""A Dramatiq Redis broker whose consumers block in Redis instead of sleeping.

Stock ``RedisBroker`` consumers poll: an empty fetch sleeps with exponential backoff up to
``worker_timeout`` (1 s), so enqueue → actor start is milliseconds to hundreds of ms. This
broker keeps everything else of Dramatiq (wire format, ack sets, the Lua ``dispatch`` script
for acks, nacks and requeues, dead letters, the dashboard) and changes two things:

**Blocking claim.** A producer writes what stock Dramatiq writes: ``HSET ns:Q.msgs`` +
``RPUSH ns:Q`` in one MULTI. Each consumer owns one connection on which it sends, back to
back, ``BLMOVE ns:Q ns:__claims__.{broker}.Q LEFT RIGHT timeout`` and an ``EVALSHA`` of
:data:`CLAIM_SCRIPT`. Redis runs the script as soon as the BLMOVE returns, without another
network round trip: it moves the claimed id (and up to ``room - 1`` more from the queue) into
the broker's ack set, exactly where the stock fetch puts them, and returns the payloads. An
enqueue therefore reaches an idle consumer in one hop, like ``RPUSH`` → ``BLPOP``, and only one
blocked consumer is woken per message (Redis serves blocked clients in order). When the
BLMOVE times out (``fallback_poll_ms``, 100 ms; Redis checks blocking timeouts in its 10 Hz
cron) the consumer returns ``None`` so Dramatiq's consumer thread can check for shutdown and
due delayed messages. An id is in the claim list only between the BLMOVE and the script; if
the script is missing (Redis restarted) the consumer loads it and claims the list again, and a
dead broker's claim lists are swept like its ack sets. A connection lost after the script
ran but before its reply arrived leaves ids in the (live) broker's ack set that nothing
holds: after reconnecting, the consumer puts back on the queue every id of its ack set that
is neither in flight nor cached. A consumer whose prefetch is full does not claim; it waits
for one of its own acks.

**Crash redelivery.** The stock lottery maintenance (1 in 1000 calls, calling queue only,
``heartbeat_timeout`` 60 s) is disabled. Instead each process runs :data:`MAINT_SCRIPT`
every ``maintenance_interval_ms`` (1 s): it refreshes this process's heartbeat, and for every
broker silent for ``heartbeat_timeout_ms`` (5 s) re-queues its unacked (and claimed) messages
on *every declared queue* and its delay queue, then forgets it. It never calls ``KEYS``. All
processes of a namespace must declare the same queues (``workers.broker`` does). A SIGKILLed
worker's command is redelivered ~5-6 s later. A process that finds its *own* heartbeat stale
(Redis restarted or was unreachable for longer than the timeout, or the process stalled)
sweeps nothing: every clock starts again, and a worker that really died is swept one timeout
later (sweeping then would run every live worker's messages in flight a second time).
"""

from __future__ import annotations

import collections
import contextlib
import threading
import time
from collections.abc import Iterable
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
# Redis checks blocking timeouts in its cron (``hz`` 10): a BLMOVE returns 0-100 ms after its
# timeout, so asking for less than 100 ms buys nothing.
DEFAULT_FALLBACK_POLL_MS = 100
# Delay queues (``Q.DQ``) are fed by Dramatiq itself; a message there wakes the consumer at
# once like any other, so their timeout only paces the consumer thread's check of due delayed
# messages: once a second is enough and keeps idle consumers off the CPU.
DELAY_QUEUE_POLL_MS = 1_000
# How far in the future an eta on a main queue may be (clock skew between hosts) before the
# message counts as malformed.
ETA_SLACK_MS = 5_000

# KEYS[1] = namespace
# ARGV = now_ms, broker_id, heartbeat_timeout_ms, dead_message_ttl_ms, (unused), queue...
MAINT_SCRIPT = """
local ns = KEYS[1]
local now = tonumber(ARGV[1])
local hb = ns .. ":__heartbeats__"
local timeout = tonumber(ARGV[3])
local previous = redis.call("zscore", hb, ARGV[2])
if previous and tonumber(previous) < now - timeout then
  -- Our own heartbeat is stale too: Redis was gone (a restart, a partition) or we were, not
  -- the others. Every live worker looks dead now; sweeping would run their messages in
  -- flight a second time. Start every clock again: a worker that really died meanwhile is
  -- swept one timeout later.
  for _, w in ipairs(redis.call("zrange", hb, 0, -1)) do redis.call("zadd", hb, now, w) end
  redis.call("zadd", hb, now, ARGV[2])
  return 0
end
redis.call("zadd", hb, now, ARGV[2])
local requeued = 0
local dead = redis.call("zrangebyscore", hb, 0, now - timeout, "LIMIT", 0, 100)
for i = 1, #dead do
  local w = dead[i]
  for j = 6, #ARGV do
    local q = ARGV[j]
    local qk = ns .. ":" .. q
    local mk = qk .. ".msgs"
    local claims = ns .. ":__claims__." .. w .. "." .. q
    local acks = ns .. ":__acks__." .. w .. "." .. q
    local ids = redis.call("lrange", claims, 0, -1)
    for _, id in ipairs(redis.call("smembers", acks)) do ids[#ids + 1] = id end
    for _, id in ipairs(ids) do
      if redis.call("hexists", mk, id) == 1 then
        redis.call("rpush", qk, id)
        requeued = requeued + 1
      end
    end
    redis.call("del", acks, claims)
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

# The stock dispatch ``fetch`` (LPOP, SADD to the ack set, HMGET), run right after the BLMOVE
# that claimed one id into this consumer's claim list, without the stock script's per-call
# preamble (heartbeat ZADD, eight arguments, key building in Lua: the heartbeat is
# MAINT_SCRIPT's job). Same keys, same ack-set semantics, so acks, nacks, the sweep and the
# dashboard see exactly what the stock fetch leaves behind.
# KEYS = claim list, queue list, ack set, message hash; ARGV = how many ids at most
CLAIM_SCRIPT = """
local ids = redis.call("lrange", KEYS[1], 0, -1)
if #ids > 0 then redis.call("del", KEYS[1]) end
local more = tonumber(ARGV[1]) - #ids
if more > 0 then
  local extra = redis.call("lpop", KEYS[2], more)
  if extra then
    for _, id in ipairs(extra) do ids[#ids + 1] = id end
  end
end
if #ids == 0 then return {} end
redis.call("sadd", KEYS[3], unpack(ids))
return redis.call("hmget", KEYS[4], unpack(ids))
"""


class FastRedisBroker(RedisBroker):
    """``RedisBroker`` with blocking-claim consumers and deterministic crash redelivery.

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
        self._claim = self.client.register_script(CLAIM_SCRIPT)
        self._maint_lock = threading.Lock()
        self._next_maint = 0.0

    @property
    def consumer_class(self) -> type[BlockingClaimConsumer]:
        return BlockingClaimConsumer

    def do_enqueue(self, queue_name: str, message_id: str, data: bytes) -> None:
        wire.enqueue_fast(self.client, self.namespace, queue_name, message_id, data)

    def acks_key(self, queue_name: str) -> str:
        return f"{self.namespace}:__acks__.{self.broker_id}.{queue_name}"

    def claims_key(self, queue_name: str) -> str:
        return f"{self.namespace}:__claims__.{self.broker_id}.{queue_name}"

    def claim_keys(self, queue_name: str) -> list[str]:
        """CLAIM_SCRIPT's keys for ``queue_name``."""
        return [
            self.claims_key(queue_name),
            wire.queue_key(self.namespace, queue_name),
            self.acks_key(queue_name),
            wire.msgs_key(self.namespace, queue_name),
        ]

    @property
    def claim_sha(self) -> str:
        sha: str = self._claim.sha
        return sha

    def do_fetch(self, queue_name: str, count: int) -> list[bytes | None]:
        """Without blocking, move up to ``count`` message ids (those this broker's consumer
        left claimed first) to this broker's ack set; return their payloads."""
        fetched: list[bytes | None] = self._claim(
            keys=self.claim_keys(queue_name), args=[max(1, min(count, 1000))]
        )
        return fetched

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


class BlockingClaimConsumer(dramatiq.Consumer):
    """Claim through ``BLMOVE`` + :data:`CLAIM_SCRIPT` on a connection of its own."""

    def __init__(self, broker: FastRedisBroker, queue_name: str, prefetch: int, timeout: int):
        self.broker = broker
        self.queue_name = queue_name
        self.prefetch = prefetch
        poll_ms = broker.fallback_poll_ms
        if queue_name.endswith(".DQ"):
            poll_ms = max(poll_ms, DELAY_QUEUE_POLL_MS)
        self.wait_s = max(min(timeout, poll_ms), 1) / 1000
        self.message_cache: collections.deque[bytes | None] = collections.deque()
        self._room = threading.Event()
        self._keys = broker.claim_keys(queue_name)
        # A redis-py ``Connection`` (untyped in redis-py, hence Any).
        self._conn: Any = None
        # The packed BLMOVE + EVALSHA pair, by room: packed once, written with one send.
        self._packed: dict[int, list[bytes | memoryview]] = {}
        self._errors = 0
        # Messages handed to Dramatiq and not yet acked, nacked or requeued (worker threads
        # ack), message id → Redis id: with the cached payloads, every id of our ack set that
        # we still hold.
        self._in_flight: dict[str, str] = {}
        self._in_flight_lock = threading.Lock()
        # Set by a lost connection: a claim whose reply was lost left ids in our ack set that
        # nothing here holds; the next call puts them back on the queue.
        self._recover = False

    @property
    def outstanding_message_count(self) -> int:
        return len(self._in_flight) + len(self.message_cache)

    def ack(self, message: dramatiq.MessageProxy) -> None:
        rid = message.options["redis_message_id"]
        try:
            # The current queue may differ from message.queue_name for delayed messages.
            self.broker.do_ack(self.queue_name, rid)
        except redis.ConnectionError as exc:
            raise ConnectionClosed(exc) from None  # type: ignore[no-untyped-call]
        # Held until the ack is through: released on a failed one, its id would look stranded
        # in our ack set and be put back on the queue (run again) while Dramatiq retries it.
        self._release(message.message_id)

    def nack(self, message: dramatiq.MessageProxy) -> None:
        rid = message.options["redis_message_id"]
        try:
            self.broker.do_nack(self.queue_name, rid)
        except redis.ConnectionError as exc:
            raise ConnectionClosed(exc) from None  # type: ignore[no-untyped-call]
        self._release(message.message_id)

    def _release(self, *message_ids: str) -> None:
        with self._in_flight_lock:
            for message_id in message_ids:
                self._in_flight.pop(message_id, None)
        self._room.set()

    def requeue(self, messages: Iterable[dramatiq.MessageProxy]) -> None:
        messages = list(messages)
        if not messages:
            return
        ids = [m.options["redis_message_id"] for m in messages]
        try:
            self.broker.do_requeue(self.queue_name, *ids)  # an RPUSH: wakes a blocked consumer
        except redis.ConnectionError as exc:
            raise ConnectionClosed(exc) from None  # type: ignore[no-untyped-call]
        self._release(*(m.message_id for m in messages))

    def __next__(self) -> dramatiq.MessageProxy | None:
        try:
            return self._next()
        except (redis.ConnectionError, redis.TimeoutError) as exc:
            # Redis went away (restart, CLIENT KILL, network): back off and keep going rather
            # than letting ConsumerThread drop its in-memory delay queue and sleep 3 s.
            self._errors += 1
            self._recover = True
            self._drop_connection()
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
                why = self._malformed(message)
                if why is not None:
                    # JSON, but not a message this consumer can run and ack: raised here (or
                    # in Dramatiq's worker thread) it restarted the consumer and stranded the
                    # rest of its claim, or killed the thread.
                    log.error("malformed message", queue=self.queue_name, reason=why)
                    self._dead_letter_undecodable(data)
                    continue
                rid = message.options["redis_message_id"]
                with self._in_flight_lock:
                    self._in_flight[message.message_id] = rid
                return dramatiq.MessageProxy(message)

            self.broker.maintain()
            if self._recover:
                self.requeue_stranded()
                self._recover = False
            self._room.clear()
            room = self.prefetch - self.outstanding_message_count
            if room <= 0:
                # Full: leave the queue to idle consumers; wait for one of our acks.
                self._room.wait(self.wait_s)
                return None

            fetched = self._claim(room)
            self._errors = 0
            if not fetched:
                return None  # timed out: ConsumerThread checks shutdown and delayed messages
            self.message_cache.extend(fetched)

    def _malformed(self, message: Message[Any]) -> str | None:
        """Why a decoded message cannot be run here, or None. Its fields must have the wire
        format's types (docs/wire-format.md), with the mandatory ``options.redis_message_id``;
        it must name the queue it was read from (Dramatiq's worker thread looks its consumer
        up by that name, and dies of a KeyError); and on a main queue its ``eta``, if any,
        must be due (Dramatiq moves a delayed message to its main queue once due: a future
        eta there would be held in memory, unacked, taking prefetch room until then)."""
        options = message.options
        if not isinstance(options, dict):
            return "options is not an object"
        rid = options.get("redis_message_id")
        if not isinstance(rid, str) or not rid:
            return "options.redis_message_id is missing"
        for name in ("message_id", "actor_name", "queue_name"):
            value = getattr(message, name)
            if not isinstance(value, str) or not value:
                return f"{name} is not a string"
        if not isinstance(message.args, list | tuple) or not isinstance(message.kwargs, dict):
            return "args is not a list or kwargs not an object"
        if message.queue_name != self.queue_name:
            return f"it names queue {message.queue_name!r}"
        eta = options.get("eta")
        main_queue = not self.queue_name.endswith(".DQ")
        if main_queue and eta is not None and not _due(eta):
            return "a future eta on a main queue"
        return None

    def requeue_stranded(self) -> int:
        """Put back on the queue the ids of our ack set that we hold nowhere: a claim whose
        reply was lost with the connection moved them there, and no sweep would (this broker
        is alive). Ids acked meanwhile are skipped by the requeue script. Returns how many."""
        acks = self.broker.acks_key(self.queue_name)
        members = {
            m.decode() if isinstance(m, bytes) else str(m)
            for m in self.broker.client.smembers(acks)
        }
        with self._in_flight_lock:
            held = set(self._in_flight.values())
        for data in list(self.message_cache):
            if data is not None:
                with contextlib.suppress(DecodeError):
                    rid = Message.decode(data).options.get("redis_message_id")
                    if isinstance(rid, str):
                        held.add(rid)
        stranded = sorted(members - held)
        if stranded:
            self.broker.do_requeue(self.queue_name, *stranded)
            log.warning(
                "claimed messages whose reply was lost put back on the queue",
                queue=self.queue_name,
                count=len(stranded),
            )
        return len(stranded)

    def _claim(self, room: int) -> list[bytes | None]:
        """Block until a message is queued (≤ ``wait_s``), then claim up to ``room`` ids."""
        conn = self._connection()
        packed = self._packed.get(room)
        if packed is None:
            packed = self._packed[room] = conn.pack_commands(
                [
                    ("BLMOVE", self._keys[1], self._keys[0], "LEFT", "RIGHT", self.wait_s),
                    ("EVALSHA", self.broker.claim_sha, 4, *self._keys, room),
                ]
            )
        conn.send_packed_command(packed)
        conn.read_response()  # the id moved, or None on timeout: the script's reply says all
        try:
            fetched: list[bytes | None] = conn.read_response()
        except redis.exceptions.NoScriptError:
            # Redis restarted and lost its script cache; what BLMOVE moved waits in our claim
            # list, and the (re-loading) call below claims it.
            fetched = self.broker.do_fetch(self.queue_name, room)
        return fetched

    def _connection(self) -> Any:
        if self._conn is None:
            # A connection of our own: it sits in BLMOVE while the pool serves everyone else.
            self._conn = self.broker.client.connection_pool.make_connection()
            self._conn.connect()
        return self._conn

    def _dead_letter_undecodable(self, data: bytes) -> None:
        """A payload that is not a Dramatiq message (hostile or corrupt producer) must not
        stall the consumer nor come back after a restart: find its id among this consumer's
        unacked messages and move it to the dead-letter queue."""
        acks = self.broker.acks_key(self.queue_name)
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

    def close(self) -> None:
        self._room.set()
        self._drop_connection()

    def _drop_connection(self) -> None:
        if self._conn is not None:
            with contextlib.suppress(redis.RedisError, OSError):
                self._conn.disconnect()
            self._conn = None


def _due(eta: object) -> bool:
    return isinstance(eta, int) and eta <= time.time() * 1000 + ETA_SLACK_MS


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
