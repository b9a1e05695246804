"""Coalesced, pipelined Redis writes: how the streamer keeps up with 20,000 messages/s.

Handlers never talk to Redis. They update in-memory state and mark its key dirty with
:meth:`CacheWriter.touch`; one writer task takes every dirty key at once and writes them in
one pipeline (one round trip). While that round trip is in flight, new messages keep
landing on the (new) dirty set, so a burst of N updates for one symbol costs one ``SET``.
Writes are sequential, so a key is never overwritten by an older value.

A failed write (Redis restarting) keeps the keys dirty and retries with a short backoff;
newer values replace the ones that failed.

Latency accounting: every touch carries the message's receive stamp
(``time.perf_counter_ns``); when the pipeline holding it completes, receive → visible is
known for every message of the batch. The oldest one goes to a Prometheus histogram; an
optional ``on_flush(stamps, done_ns)`` hook (the benchmark) gets them all.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from typing import Protocol

import redis.asyncio as aioredis
import structlog

from pms.streaming.status import WRITE_LATENCY

log = structlog.get_logger(__name__)

DELETE = None  # a dirty key whose value is None is deleted


def stop_if_cancelled() -> None:
    """Raise ``CancelledError`` in a task that was cancelled but never saw it.

    A cancel that lands while a Redis call completes can be swallowed inside the client on
    Python 3.11 (the task stays "cancelling" and the loop goes back to waiting: observed in
    ``bench/streamer_ingest.py``, whose shutdown then hung on the cache writer). Loops that
    run until cancelled call this after each such await.
    """
    task = asyncio.current_task()
    if task is not None and task.cancelling():
        raise asyncio.CancelledError


class Renderable(Protocol):
    def render(self) -> bytes:
        """The value to store, built at write time (so N updates serialise once)."""


FlushHook = Callable[[list[int], int], None]


class CacheWriter:
    def __init__(
        self,
        client: aioredis.Redis,
        *,
        on_flush: FlushHook | None = None,
        retry_s: float = 0.1,
    ) -> None:
        self._client = client
        self._dirty: dict[str, Renderable | None] = {}
        self._stamps: list[int] = []
        self._wake = asyncio.Event()
        self._on_flush = on_flush
        self._retry_s = retry_s
        self.writes = 0
        self.batches = 0

    # --- hot path ------------------------------------------------------------------------
    def touch(self, key: str, value: Renderable | None, recv_ns: int = 0) -> None:
        """Mark ``key`` to be written with ``value.render()`` (or deleted when None)."""
        self._dirty[key] = value
        if recv_ns:
            self._stamps.append(recv_ns)
        if not self._wake.is_set():
            self._wake.set()

    # --- writer --------------------------------------------------------------------------
    async def run(self) -> None:
        """Write dirty keys until cancelled (then :meth:`flush` once more on shutdown)."""
        while True:
            await self._wake.wait()
            self._wake.clear()
            written = await self.flush()
            stop_if_cancelled()
            if not written:
                await asyncio.sleep(self._retry_s)

    async def flush(self) -> bool:
        """Write everything dirty now, in one pipeline. False if Redis failed."""
        if not self._dirty:
            return True
        batch, self._dirty = self._dirty, {}
        stamps, self._stamps = self._stamps, []
        pipe = self._client.pipeline(transaction=False)
        for key, value in batch.items():
            if value is None:
                pipe.delete(key)
            else:
                pipe.set(key, value.render())
        try:
            await pipe.execute()
        except (aioredis.RedisError, OSError) as exc:
            log.warning("cache write failed; retrying", keys=len(batch), error=str(exc))
            batch.update(self._dirty)  # newer values win
            self._dirty = batch
            self._stamps = stamps + self._stamps
            self._wake.set()
            return False
        done = time.perf_counter_ns()
        self.writes += len(batch)
        self.batches += 1
        if stamps:
            WRITE_LATENCY.observe((done - stamps[0]) / 1e9)  # stamps arrive in order
            if self._on_flush is not None:
                self._on_flush(stamps, done)
        return True

    @property
    def pending(self) -> int:
        return len(self._dirty)
