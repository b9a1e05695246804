"""What the API reports, read from Redis, Postgres and the exchange (blocking; run in threads).

Every probe has short timeouts: a readiness answer that hangs is worse than a ``false``.
Dramatiq's key scheme (namespace ``ns``): ready messages ``ns:Q`` (list), delayed ``ns:Q.DQ``
(list), dead ``ns:Q.XQ`` (sorted set), in flight ``ns:__acks__.{broker}.Q`` (sets), live
consumers ``ns:__heartbeats__`` (sorted set, score = last beat in ms).
"""

from __future__ import annotations

import time
import urllib.error
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass, field
from decimal import Decimal
from typing import Any

import orjson
import redis
from sqlalchemy import Engine, create_engine, func, select, text

from pms.config import ExchangeKind, Settings
from pms.db.models import Position, SubAccount
from pms.messaging.wire import QUEUES

BINANCE_REST = "https://fapi.binance.com"
LEADER_KEY = "pms:scheduler:leader"
#: Written by the streamer (``pms.streaming.status``; not imported: its metrics would show here).
STATUS_KEY = "pms:stream:status"
#: A consumer whose heartbeat is older than this is not counted (brokers beat every second).
WORKER_SEEN_MS = 10_000
TIMEOUT_S = 2.0


@dataclass(frozen=True, slots=True)
class Check:
    name: str
    ok: bool
    detail: str
    data: dict[str, Any] = field(default_factory=dict)

    def as_dict(self) -> dict[str, Any]:
        return {"ok": self.ok, "detail": self.detail, **self.data}


@dataclass(frozen=True, slots=True)
class QueueStats:
    queue: str
    ready: int
    delayed: int
    dead: int
    in_flight: int

    def as_dict(self) -> dict[str, int]:
        return {
            "ready": self.ready,
            "delayed": self.delayed,
            "dead": self.dead,
            "inFlight": self.in_flight,
        }


def _text(value: bytes | str) -> str:
    return value.decode() if isinstance(value, bytes) else value


def now_ms() -> int:
    return int(time.time() * 1000)


class Probes:
    """One Redis client and one small Postgres pool for the life of the API process."""

    def __init__(self, settings: Settings, *, clock_ms: Callable[[], int] = now_ms) -> None:
        self.settings = settings
        self.clock_ms = clock_ms
        self.redis = redis.Redis.from_url(
            settings.redis_url, socket_connect_timeout=TIMEOUT_S, socket_timeout=TIMEOUT_S
        )
        self.db: Engine = create_engine(
            settings.database_url,
            pool_size=2,
            max_overflow=2,
            pool_pre_ping=True,
            pool_timeout=TIMEOUT_S,
            connect_args={"connect_timeout": int(TIMEOUT_S)},
        )

    def close(self) -> None:
        self.db.dispose()
        self.redis.close()

    # -- readiness -------------------------------------------------------------------------

    def check_redis(self) -> Check:
        try:
            self.redis.ping()
        except (redis.RedisError, OSError) as exc:
            return Check("redis", False, f"unreachable: {type(exc).__name__}")
        return Check("redis", True, "ping ok")

    def check_postgres(self) -> Check:
        try:
            with self.db.connect() as conn:
                conn.execute(text("SELECT 1"))
        except Exception as exc:  # any driver error means "not ready"
            return Check("postgres", False, f"unreachable: {type(exc).__name__}")
        return Check("postgres", True, "select ok")

    def exchange_url(self) -> str:
        if self.settings.exchange is ExchangeKind.SIM:
            return self.settings.sim_url.rstrip("/")
        return BINANCE_REST

    def check_exchange(self) -> Check:
        url = f"{self.exchange_url()}/fapi/v1/time"
        try:
            with urllib.request.urlopen(url, timeout=TIMEOUT_S) as response:  # noqa: S310
                status = response.status
        except urllib.error.HTTPError as exc:
            status = exc.code
        except (urllib.error.URLError, OSError) as exc:
            return Check("exchange", False, f"unreachable: {type(exc).__name__}")
        if status != 200:
            return Check("exchange", False, f"HTTP {status}")
        return Check("exchange", True, f"{self.settings.exchange.value} answers")

    def streams(self) -> dict[str, dict[str, Any]]:
        raw = self.redis.hgetall(self.settings.key(STATUS_KEY))
        out: dict[str, dict[str, Any]] = {}
        for name, value in raw.items():
            try:
                out[_text(name)] = orjson.loads(value)
            except orjson.JSONDecodeError:
                out[_text(name)] = {"connected": False, "reason": "unreadable status"}
        return out

    def check_streams(self) -> Check:
        try:
            streams = self.streams()
        except (redis.RedisError, OSError) as exc:
            return Check("streamer", False, f"status unreadable: {type(exc).__name__}")
        if not streams:
            return Check("streamer", False, "no stream status: is the streamer running?")
        now, stale_ms = self.clock_ms(), self.settings.ready_stream_stale_ms
        ages = {
            name: (now - int(s["lastMessageTs"])) if s.get("lastMessageTs") else None
            for name, s in streams.items()
        }
        # The user stream is quiet while nobody trades: freshness is judged on market data.
        market = {n: a for n, a in ages.items() if n != "user"} or ages
        fresh = [
            n
            for n, a in market.items()
            if a is not None and a <= stale_ms and streams[n].get("connected")
        ]
        data = {"ageMs": ages}
        if not fresh:
            return Check("streamer", False, f"no market stream message for > {stale_ms} ms", data)
        return Check("streamer", True, f"fresh: {', '.join(sorted(fresh))}", data)

    def check_scheduler(self) -> Check:
        try:
            leader = self.redis.get(self.settings.key(LEADER_KEY))
        except (redis.RedisError, OSError) as exc:
            return Check("scheduler", False, f"unreadable: {type(exc).__name__}")
        if leader is None:
            return Check("scheduler", False, "no leader holds the lock")
        return Check("scheduler", True, "leader present", {"leader": _text(leader)})

    def workers_alive(self) -> int:
        key = f"{self.settings.dramatiq_namespace}:__heartbeats__"
        return int(self.redis.zcount(key, self.clock_ms() - WORKER_SEEN_MS, "+inf"))

    def check_workers(self) -> Check:
        try:
            alive = self.workers_alive()
        except (redis.RedisError, OSError) as exc:
            return Check("workers", False, f"unreadable: {type(exc).__name__}")
        if alive == 0:
            return Check("workers", False, "no worker heartbeat in the last 10 s", {"alive": 0})
        return Check("workers", True, f"{alive} consumer(s) alive", {"alive": alive})

    def readiness(self) -> list[Check]:
        return [
            self.check_redis(),
            self.check_postgres(),
            self.check_exchange(),
            self.check_streams(),
            self.check_scheduler(),
            self.check_workers(),
        ]

    # -- numbers ---------------------------------------------------------------------------

    def queues(self) -> list[QueueStats]:
        ns = self.settings.dramatiq_namespace
        in_flight = dict.fromkeys(QUEUES, 0)
        ack_keys = list(self.redis.scan_iter(match=f"{ns}:__acks__.*", count=1000))
        pipe = self.redis.pipeline(transaction=False)
        for key in ack_keys:
            pipe.scard(key)
        for queue in QUEUES:
            pipe.llen(f"{ns}:{queue}")
            pipe.llen(f"{ns}:{queue}.DQ")
            pipe.zcard(f"{ns}:{queue}.XQ")
        values = pipe.execute()
        for key, count in zip(ack_keys, values[: len(ack_keys)], strict=True):
            queue = _text(key)[len(f"{ns}:__acks__.") :].split(".", 1)[-1]
            if queue.endswith(".DQ"):
                queue = queue[:-3]
            if queue in in_flight:
                in_flight[queue] += int(count)
        rest = values[len(ack_keys) :]
        return [
            QueueStats(
                q, int(rest[3 * i]), int(rest[3 * i + 1]), int(rest[3 * i + 2]), in_flight[q]
            )
            for i, q in enumerate(QUEUES)
        ]

    def accounts(self) -> dict[str, Any]:
        with self.db.connect() as conn:
            by_status = dict(
                conn.execute(
                    select(SubAccount.status, func.count())
                    .where(SubAccount.is_house.is_(False))
                    .group_by(SubAccount.status)
                ).all()
            )
            wallet = conn.execute(
                select(func.coalesce(func.sum(SubAccount.wallet_balance), 0)).where(
                    SubAccount.is_house.is_(False)
                )
            ).scalar_one()
            positions = conn.execute(
                select(Position.symbol, func.count(), func.sum(Position.qty))
                .where(Position.closed_at.is_(None))
                .group_by(Position.symbol)
            ).all()
        return {
            "byStatus": {str(k): int(v) for k, v in by_status.items()},
            "total": sum(int(v) for v in by_status.values()),
            "walletTotal": str(Decimal(wallet)),
            "openPositions": {str(s): int(n) for s, n, _ in positions},
            "bookQty": {str(s): str(Decimal(q)) for s, _, q in positions},
        }
