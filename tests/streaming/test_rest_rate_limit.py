"""The streamer's REST calls under a 429/418: the door stays closed for the Retry-After.

They used to ignore it (every ccxt error became ExchangeUnavailable, the header dropped):
under a 418 IP ban with Retry-After 120 s the depth-snapshot tasks (one per symbol, 0.25 s
doubling to 5 s) and the listen-key POST of the reconnect loop (0.1 s doubling to 5 s) kept
calling the exchange, which is what extends an IP ban, and the ban is per IP: the workers'
orders (liquidations included) share it."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from typing import Any

import ccxt.async_support as ccxt_async
import pytest

from pms.errors import RateLimited
from pms.exchange.errors import DEFAULT_PAUSE_S
from pms.sim.runner import SimServer
from pms.streaming.reconnect import ReconnectPolicy
from pms.streaming.rest import ExchangeRest
from tests.streaming.conftest import StreamerThread

WINDOW_S = 4.0
BIG = 100_000


def _hits(sim: SimServer, path: str) -> int:
    for fault in sim.admin("/sim/faults")["faults"]:
        if fault["path"] == path:
            return BIG - int(fault["count"])
    return BIG


def test_an_ip_ban_is_not_hammered_by_snapshots_and_listen_key_posts(
    sim: SimServer, make_streamer: Callable[..., StreamerThread]
) -> None:
    for path in ("/fapi/v1/depth", "/fapi/v1/listenKey"):
        sim.admin("/sim/faults", {"kind": "418", "count": BIG, "path": path, "retryAfter": 120})
    try:
        make_streamer(policy=ReconnectPolicy())  # the production backoff
        time.sleep(WINDOW_S)
        depth, keys = _hits(sim, "/fapi/v1/depth"), _hits(sim, "/fapi/v1/listenKey")
    finally:
        sim.admin("/sim/faults", method="DELETE")
    # Retry-After 120 s: one attempt per symbol (2) and one listen-key POST at most.
    assert depth <= 2 and keys <= 1, (
        f"{depth} depth snapshots and {keys} listen-key POSTs in {WINDOW_S}s of a 418 ban"
    )


class FakeCcxt:
    """Answers each call with the next of ``answers`` (an exception is raised)."""

    def __init__(self, answers: list[Any], headers: dict[str, str]) -> None:
        self.answers = answers
        self.last_response_headers = headers
        self.calls = 0

    async def fapiPublicGetDepth(self, params: dict[str, Any]) -> Any:
        self.calls += 1
        answer = self.answers.pop(0)
        if isinstance(answer, Exception):
            raise answer
        return answer


SNAPSHOT = {"lastUpdateId": 1, "E": 1, "bids": [["1", "1"]], "asks": [["2", "1"]]}


@pytest.mark.parametrize(
    ("error", "headers", "pause"),
    [
        (ccxt_async.DDoSProtection("418 banned"), {"Retry-After": "30"}, 30.0),
        (ccxt_async.RateLimitExceeded("429"), {}, DEFAULT_PAUSE_S[429]),
        (ccxt_async.DDoSProtection("418 banned"), {"retry-after": "junk"}, DEFAULT_PAUSE_S[418]),
    ],
)
def test_no_call_reaches_the_exchange_until_the_pause_is_over(
    error: Exception, headers: dict[str, str], pause: float
) -> None:
    now = [1000.0]
    rest = ExchangeRest(None, "k", "s", monotonic=lambda: now[0])
    fake = FakeCcxt([error, SNAPSHOT], headers)
    rest._ex = fake

    async def main() -> None:
        with pytest.raises(RateLimited):
            await rest.depth("BTCUSDT")
        now[0] += pause - 0.5
        with pytest.raises(RateLimited) as refused:
            await rest.depth("BTCUSDT")
        assert fake.calls == 1, "refused here, not sent"
        assert refused.value.details["retryAfterSec"] == 0.5
        now[0] += 0.5
        assert (await rest.depth("BTCUSDT")).last_update_id == 1
        assert fake.calls == 2

    asyncio.run(main())
