"""``pms scheduler``: APScheduler in the leader process enqueues the periodic jobs on
``pms.sync``; a standby copy waits and takes over within a lock TTL if the leader dies.

Jobs do not double-fire: each firing belongs to a time slot (``floor(now / interval)``) and
is enqueued only if ``SET pms:sched:{job}:{slot} NX`` succeeds, so even a leader that lost
its lock without noticing and a new leader cannot both enqueue the same slot.
"""

from __future__ import annotations

import threading
import uuid
from dataclasses import dataclass

import redis
import structlog
from apscheduler.schedulers.background import BackgroundScheduler

from pms.clock import Clock
from pms.config import Settings
from pms.messaging import wire
from pms.scheduler.leader import LeaderLock

log = structlog.get_logger(__name__)


@dataclass(frozen=True, slots=True)
class Job:
    name: str  # the actor to enqueue on pms.sync
    interval_s: float


DEFAULT_JOBS = (Job("sync_orders", 30), Job("sync_positions", 60), Job("settle_funding", 300))


class SchedulerService:
    def __init__(
        self,
        settings: Settings,
        client: redis.Redis,
        clock: Clock,
        *,
        jobs: tuple[Job, ...] = DEFAULT_JOBS,
        lock_ttl_ms: int = 5_000,
    ) -> None:
        self._settings = settings
        self._client = client
        self._clock = clock
        self._jobs = jobs
        self.lock = LeaderLock(client, settings.key("pms:scheduler:leader"), lock_ttl_ms)
        self._stop = threading.Event()
        self._scheduler: BackgroundScheduler | None = None
        self.fired: list[tuple[str, int]] = []

    def fire(self, job: Job) -> bool:
        """Enqueue one firing of ``job`` unless its slot was already enqueued."""
        slot = int(self._clock.ms() // (job.interval_s * 1000))
        marker = self._settings.key(f"pms:sched:{job.name}:{slot}")
        if not self._client.set(
            marker, self.lock.token, nx=True, ex=max(int(job.interval_s * 10), 60)
        ):
            return False
        command = {
            "requestId": f"sched-{job.name}-{slot}-{uuid.uuid4().hex[:6]}",
            "reason": "schedule",
            "slot": slot,
        }
        wire.send(
            self._client,
            self._settings.dramatiq_namespace,
            job.name,
            command,
            timestamp_ms=self._clock.ms(),
            queue_name="pms.sync",
        )
        self.fired.append((job.name, slot))
        log.info("job enqueued", job=job.name, slot=slot)
        return True

    def run(self) -> None:
        """Block until ``stop()``: wait as standby, lead while holding the lock."""
        renew_s = self.lock.ttl_ms / 3000
        while not self._stop.is_set():
            try:
                if not self.lock.acquire():
                    self._stop.wait(renew_s)
                    continue
                log.info("became scheduler leader", token=self.lock.token)
                self._lead(renew_s)
            except (redis.RedisError, OSError) as exc:
                # Redis restarting or unreachable (redis-py's own retries spent): a leader
                # that cannot renew its lock must stop acting (its lock expires for the
                # standbys), and every instance keeps trying, so one leads again once Redis
                # is back; the process stays useful instead of living on with a dead thread.
                self._step_down()
                log.warning("scheduler lost Redis; standing by", error=str(exc))
                self._stop.wait(renew_s)
        self._step_down()

    def _lead(self, renew_s: float) -> None:
        scheduler = BackgroundScheduler(timezone="UTC")
        for job in self._jobs:
            scheduler.add_job(
                self.fire,
                "interval",
                seconds=job.interval_s,
                args=[job],
                id=job.name,
                max_instances=1,
                coalesce=True,
            )
        scheduler.start()
        self._scheduler = scheduler
        for job in self._jobs:
            self.fire(
                job
            )  # a new leader runs each job once at once: the old one may have died mid-period
        try:
            while not self._stop.wait(renew_s):
                if not self.lock.renew():
                    log.error("lost scheduler leadership; standing by")
                    break
        finally:
            self._step_down()

    def _step_down(self) -> None:
        scheduler, self._scheduler = self._scheduler, None
        if scheduler is not None and scheduler.running:
            scheduler.shutdown(wait=False)

    def stop(self) -> None:
        self._stop.set()
        self._step_down()
        self.lock.release()
