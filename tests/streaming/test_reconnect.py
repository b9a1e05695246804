"""The generic reconnect loop with a fake connection: backoff, reset after a healthy
connection, silence watchdog, a stream's own reconnect request, clean cancellation."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Iterator

import pytest
import redis.asyncio as aioredis
from websockets.exceptions import ConnectionClosedOK

from pms.clock import SystemClock
from pms.config import Settings
from pms.streaming.reconnect import Reconnect, ReconnectPolicy, backoff_delay, run_stream
from pms.streaming.status import StatusBoard


def test_backoff_grows_to_the_cap_with_bounded_jitter() -> None:
    p = ReconnectPolicy(initial_s=0.1, max_s=5.0, jitter=0.25)
    assert [backoff_delay(n, p, 0.5) for n in range(8)] == pytest.approx(
        [0.1, 0.2, 0.4, 0.8, 1.6, 3.2, 5.0, 5.0]
    )
    assert backoff_delay(3, p, 0.0) == pytest.approx(0.6)
    assert backoff_delay(3, p, 0.999999) == pytest.approx(1.0, rel=1e-5)


class FakeConn:
    def __init__(self, messages: list[str], then: str = "close") -> None:
        self.queue: asyncio.Queue[str | None] = asyncio.Queue()
        for m in messages:
            self.queue.put_nowait(m)
        if then == "close":
            self.queue.put_nowait(None)
        self.closed = False

    async def recv(self) -> str:
        item = await self.queue.get()
        if item is None:
            raise ConnectionClosedOK(None, None)
        return item

    async def send(self, message: str) -> None:
        pass

    async def close(self) -> None:
        self.closed = True
        self.queue.put_nowait(None)


class FakeStream:
    name = "fake"

    def __init__(self, conns: list[FakeConn]) -> None:
        self.conns = conns
        self.opened = 0
        self.messages: list[str] = []
        self.closes: list[str] = []

    async def open(self) -> FakeConn:
        if self.opened >= len(self.conns):
            raise OSError("refused")
        conn = self.conns[self.opened]
        self.opened += 1
        return conn

    async def on_open(self, conn: object, reconnect: bool) -> None:
        pass

    def on_message(self, raw: str | bytes, recv_ns: int) -> None:
        if raw == "expire":
            raise Reconnect("listenKeyExpired")
        self.messages.append(str(raw))

    async def on_close(self, reason: str) -> None:
        self.closes.append(reason)


@pytest.fixture
def board(settings: Settings) -> Iterator[StatusBoard]:
    client = aioredis.Redis.from_url(settings.redis_url)
    yield StatusBoard(client, SystemClock(), prefix=settings.redis_prefix + "reconnect-test:")


def run(
    stream: FakeStream, board: StatusBoard, policy: ReconnectPolicy, until: float
) -> list[float]:
    delays: list[float] = []

    async def fake_sleep(s: float) -> None:
        delays.append(s)
        await asyncio.sleep(0)

    async def main() -> None:
        task = asyncio.create_task(
            run_stream(stream, board, policy, sleep=fake_sleep, rand=lambda: 0.5)
        )
        await asyncio.sleep(until)
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        await board._client.aclose()

    asyncio.run(main())
    return delays


def test_failures_back_off_and_stream_requests_reconnect(board: StatusBoard) -> None:
    stream = FakeStream(
        [FakeConn(["a", "b"]), FakeConn(["c", "expire", "lost"]), FakeConn(["d"], then="hang")]
    )
    policy = ReconnectPolicy(initial_s=0.1, healthy_after_s=60, silence_s=60)

    delays = run(stream, board, policy, 0.2)

    assert stream.messages == ["a", "b", "c", "d"]
    assert stream.opened == 3
    assert delays == pytest.approx([0.1, 0.2])  # never healthy for 60 s: keeps growing
    assert "Reconnect: listenKeyExpired" in stream.closes[1]
    assert stream.closes[-1] == "shutdown" and stream.conns[2].closed
    health = board.stream("fake")
    assert not health.connected and health.reconnects == 2 and health.messages == 5


def test_silence_watchdog_reconnects_and_healthy_connection_resets_backoff(
    board: StatusBoard,
) -> None:
    stream = FakeStream([FakeConn(["x"], then="hang"), FakeConn(["y"], then="hang")])
    policy = ReconnectPolicy(
        initial_s=0.1, healthy_after_s=0.0, silence_s=0.05, watchdog_every_s=0.01
    )

    delays = run(stream, board, policy, 0.2)

    assert stream.messages[:2] == ["x", "y"]
    assert stream.closes[0].startswith("silent for")
    assert delays[:2] == pytest.approx([0.1, 0.1])  # reset after each healthy connection


def test_planned_rotation_replaces_a_busy_connection(board: StatusBoard) -> None:
    class Busy(FakeConn):
        async def recv(self) -> str:
            await asyncio.sleep(0.001)
            if self.closed:
                raise ConnectionClosedOK(None, None)
            return "tick"

    stream = FakeStream([Busy([], then="hang"), Busy([], then="hang")])
    policy = ReconnectPolicy(silence_s=60, max_lifetime_s=0.05, watchdog_every_s=0.01)

    run(stream, board, policy, 0.1)

    assert stream.closes[0] == "planned rotation"
    assert stream.opened == 2 and len(stream.messages) > 10


class SwallowingStream(FakeStream):
    """An exchange that went away: every open fails, and a cancel that lands during the
    connect is swallowed into a connection error (as a client library may do on 3.11)."""

    def __init__(self, connecting: asyncio.Event) -> None:
        super().__init__([])
        self.connecting = connecting

    async def open(self) -> FakeConn:
        self.opened += 1
        if self.opened == 1:
            self.connecting.set()
            with contextlib.suppress(asyncio.CancelledError):  # the task stays "cancelling"
                await asyncio.sleep(3600)
        raise OSError("refused")


def test_a_cancel_swallowed_while_reconnecting_still_stops_the_stream(
    board: StatusBoard,
) -> None:
    async def main() -> int:
        connecting = asyncio.Event()
        stream = SwallowingStream(connecting)
        task = asyncio.create_task(
            run_stream(stream, board, ReconnectPolicy(initial_s=0.01), rand=lambda: 0.5)
        )
        await connecting.wait()
        task.cancel()
        done, _ = await asyncio.wait([task], timeout=2)
        if task not in done:  # not stopped: cancel again (a real cancel) to end the test
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
        await board._client.aclose()
        assert task in done and task.cancelled()
        return stream.opened

    assert asyncio.run(main()) == 1  # no reconnect after the cancel
