"""``pms scheduler``: APScheduler in the leader process enqueues the periodic jobs on
``pms.sync``; a standby copy waits and takes over within a lock TTL if the leader dies.

Jobs do not double-fire: a firing is enqueued only if the job's last firing (its time kept in
``pms:sched:{job}``, compared and set in one Lua call) is at least 0.9 of an interval away,
so even a leader that lost its lock without noticing and a new leader cannot both enqueue
within one period. "Away" either way: after the wall clock is stepped back further than
that, the job fires again instead of waiting out the step (a slot number taken from the
clock would have been one already used). APScheduler keeps its next run times on the wall
clock too: a next run more than an interval ahead can only come from a step back, and the
leader's renew loop moves it to now. A run due while the process stalled (CPU starvation,
a VM pause) runs late, once, instead of being dropped.
"""

from __future__ import annotations

import contextlib
import threading
import uuid
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

import redis
import structlog
from apscheduler.schedulers.background import BackgroundScheduler

from pms.clock import Clock
from pms.config import Settings
from pms.messaging import wire
from pms.scheduler.leader import LeaderLock

log = structlog.get_logger(__name__)


# Bounds of what the CLI may ask: below them the leader would spin on Redis or flap.
MIN_INTERVAL_S = 0.1
MAX_INTERVAL_S = 7 * 24 * 3600.0
MIN_LOCK_TTL_MS = 300
# A firing counts as the period's if the last one is less than this share of it away.
_SAME_PERIOD = 0.9
# Compare-and-set of a job's last firing time: 1 (recorded: fire) or 0 (too close).
_CLAIM = """
local last = redis.call("get", KEYS[1])
if last then
  local gap = tonumber(ARGV[1]) - tonumber(last)
  if gap < 0 then gap = -gap end
  if gap < tonumber(ARGV[2]) then return 0 end
end
redis.call("set", KEYS[1], ARGV[1], "px", ARGV[3])
return 1
"""


@dataclass(frozen=True, slots=True)
class Job:
    name: str  # the actor to enqueue on pms.sync
    interval_s: float

    def __post_init__(self) -> None:
        if not MIN_INTERVAL_S <= self.interval_s <= MAX_INTERVAL_S:  # NaN fails too
            raise ValueError(
                f"{self.name}: interval {self.interval_s} s is outside"
                f" [{MIN_INTERVAL_S}, {MAX_INTERVAL_S:.0f}] s"
            )


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
        if lock_ttl_ms < MIN_LOCK_TTL_MS:
            raise ValueError(f"lock TTL {lock_ttl_ms} ms is below {MIN_LOCK_TTL_MS} ms")
        self._settings = settings
        self._client = client
        self._clock = clock
        self._jobs = jobs
        self._claim = client.register_script(_CLAIM)
        self.lock = LeaderLock(client, settings.key("pms:scheduler:leader"), lock_ttl_ms)
        self._stop = threading.Event()
        self._scheduler: BackgroundScheduler | None = None
        self.fired: list[tuple[str, int]] = []

    def fire(self, job: Job) -> bool:
        """Enqueue one firing of ``job`` unless one was enqueued within this period."""
        now_ms = self._clock.ms()
        interval_ms = int(job.interval_s * 1000)
        slot = now_ms // interval_ms
        keep_ms = max(10 * interval_ms, 60_000)
        claimed = self._claim(
            keys=[self._settings.key(f"pms:sched:{job.name}")],
            args=[now_ms, int(interval_ms * _SAME_PERIOD), keep_ms],
        )
        if not claimed:
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
                if self._stop.is_set():  # stopped while acquiring: lead nothing
                    self.lock.release()
                    break
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
            except Exception:
                # Anything else: step down and release, so a standby leads meanwhile,
                # rather than hold the lock with no job running.
                log.exception("scheduler failed; standing by")
                self._step_down()
                with contextlib.suppress(redis.RedisError, OSError):
                    self.lock.release()
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
                misfire_grace_time=None,  # late is better than dropped: run once, late
            )
        scheduler.start()
        self._scheduler = scheduler
        try:
            for job in self._jobs:
                # A new leader runs each job once at once: the old one may have died
                # mid-period.
                if self._stop.is_set():
                    return
                self.fire(job)
            while not self._stop.wait(renew_s):
                if not self.lock.renew():
                    log.error("lost scheduler leadership; standing by")
                    break
                self._after_clock_step(scheduler)
        finally:
            self._step_down()

    def _after_clock_step(self, scheduler: BackgroundScheduler) -> None:
        """A next run more than an interval ahead of the wall clock: the clock was stepped
        back (APScheduler would wait out the step); run the job now instead."""
        now = datetime.now(UTC)
        for job in self._jobs:
            scheduled = scheduler.get_job(job.name)
            due = scheduled.next_run_time if scheduled is not None else None
            if due is not None and due - now > timedelta(seconds=job.interval_s + 1):
                log.warning("wall clock stepped back; job rescheduled to now", job=job.name)
                scheduler.modify_job(job.name, next_run_time=now)

    def _step_down(self) -> None:
        scheduler, self._scheduler = self._scheduler, None
        if scheduler is not None and scheduler.running:
            scheduler.shutdown(wait=False)

    def stop(self) -> None:
        self._stop.set()
        self._step_down()
        self.lock.release()
