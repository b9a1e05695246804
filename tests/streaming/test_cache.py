"""The cache writer stops when cancelled, even when the Redis client swallows the cancel."""

from __future__ import annotations

import asyncio
import contextlib
from typing import Any

from pms.streaming.cache import CacheWriter


class _Value:
    def render(self) -> bytes:
        return b"v"


class _SwallowingPipeline:
    """A pipeline whose execute absorbs a cancellation, as redis-py can on Python 3.11."""

    def __init__(self, started: asyncio.Event) -> None:
        self._started = started

    def set(self, key: str, value: bytes) -> None:
        pass

    def delete(self, key: str) -> None:
        pass

    async def execute(self) -> list[Any]:
        self._started.set()
        # The library bug: the write "completes" and the cancel is lost.
        with contextlib.suppress(asyncio.CancelledError):
            await asyncio.sleep(10)
        return []


class _Client:
    def __init__(self) -> None:
        self.started = asyncio.Event()

    def pipeline(self, transaction: bool = False) -> _SwallowingPipeline:
        return _SwallowingPipeline(self.started)


def test_a_cancel_swallowed_during_a_write_still_stops_the_writer() -> None:
    async def scenario() -> bool:
        client = _Client()
        writer = CacheWriter(client)  # type: ignore[arg-type]
        task = asyncio.create_task(writer.run())
        writer.touch("k", _Value())
        await client.started.wait()
        task.cancel()
        done, _ = await asyncio.wait([task], timeout=2)
        return task in done and task.cancelled()

    assert asyncio.run(scenario()), "the writer kept waiting after its cancel was swallowed"
