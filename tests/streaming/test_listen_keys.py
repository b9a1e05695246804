"""Listen-key lifecycle on the simulator's test clock: kept alive every 30 minutes, and a key
the exchange forgot (-1125 on keepalive) replaced by a new one with the stream reconnected."""

from __future__ import annotations

from collections.abc import Callable, Iterator

import pytest

from pms.clock import TestClock
from pms.config import Settings
from pms.sim.runner import SimServer
from tests.streaming.conftest import StreamerThread
from tests.support import wait_for

MINUTE_MS = 60_000


@pytest.fixture
def clocked() -> Iterator[tuple[SimServer, TestClock]]:
    clock = TestClock()
    with SimServer(seed=3, symbols=("BTCUSDT", "ETHUSDT"), paused=True, clock=clock) as server:
        yield server, clock


def test_keepalive_every_30_minutes_keeps_the_key_past_its_hour(
    clocked: tuple[SimServer, TestClock],
    settings: Settings,
    make_streamer: Callable[..., StreamerThread],
) -> None:
    sim, clock = clocked
    st = make_streamer(
        clock=clock,
        settings=settings.model_copy(update={"sim_url": sim.url, "sim_api_key": sim.api_key}),
        keepalive_check_s=0.02,
    )
    user = st.streamer.user
    assert user is not None
    wait_for(lambda: user.listen_key, 5, message="listen key")
    key = user.listen_key

    for _ in range(3):  # 3 × 31 min: the key would have expired after the first hour
        before = user.key_renewed_ms
        clock.advance(ms=31 * MINUTE_MS)
        wait_for(lambda b=before: user.key_renewed_ms > b, 10, message="keepalive PUT")
        sim.admin("/sim/clock", {"advanceMs": 0})  # the simulator runs its expiry check

    assert sim.admin("/sim/state")["listenKey"] == key
    assert user.listen_key == key and user.keys_created == 1
    assert st.streamer.board is not None
    assert st.streamer.board.stream("user").reconnects == 0


def test_key_gone_on_keepalive_gets_a_new_key_and_reconnects(
    clocked: tuple[SimServer, TestClock],
    settings: Settings,
    make_streamer: Callable[..., StreamerThread],
) -> None:
    sim, clock = clocked
    st = make_streamer(
        clock=clock,
        settings=settings.model_copy(update={"sim_url": sim.url, "sim_api_key": sim.api_key}),
        keepalive_check_s=0.02,
    )
    user = st.streamer.user
    assert user is not None and st.streamer.board is not None
    health = st.streamer.board.stream("user")
    wait_for(lambda: health.connected, 5, message="user stream")
    old = user.listen_key

    assert sim.sim is not None
    sim.call(sim.sim.state.listen_keys.delete)  # the exchange forgets it, no event sent
    clock.advance(ms=31 * MINUTE_MS)

    wait_for(lambda: health.connected and health.reconnects >= 1, 3, message="reconnected")
    assert user.listen_key not in (None, old)
    assert sim.admin("/sim/state")["listenKey"] == user.listen_key
    assert st.streamer.syncs_enqueued == 2
