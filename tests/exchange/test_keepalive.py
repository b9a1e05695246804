"""The adapter's keep-alive transport against the simulator, through a relay that counts and
breaks TCP connections: reuse, servers closing idle connections, restarts, hangs, timeouts."""

from __future__ import annotations

import socket
import threading
import time
from collections.abc import Callable

import pytest

from pms.domain.enums import Side
from pms.exchange import transport
from pms.exchange.binance import BinanceExchange
from pms.exchange.errors import UnknownOrderState
from pms.sim.runner import SimServer
from tests.exchange.conftest import BTC, market, sim_orders
from tests.exchange.servers import Relay

Adapter = Callable[..., BinanceExchange]


def test_one_connection_carries_every_call(sim: SimServer, relay: Relay, adapter: Adapter) -> None:
    bx = adapter(relay.url)
    for i in range(15):
        placed = bx.create_order(market(Side.BUY if i % 2 else Side.SELL))
        assert placed.status == "FILLED"
        assert len(bx.fetch_order_trades(BTC, placed.exchange_order_id)) >= 1
    assert relay.accepted == 1  # time sync and 30 signed calls on one TCP connection
    assert bx.transport.connects == 1


def test_each_thread_keeps_its_own_connection(
    sim: SimServer, relay: Relay, adapter: Adapter
) -> None:
    bx = adapter(relay.url)
    bx.fetch_open_orders()
    failures: list[BaseException] = []

    def work() -> None:
        try:
            for _ in range(5):
                bx.fetch_open_orders(BTC)
        except BaseException as exc:
            failures.append(exc)

    threads = [threading.Thread(target=work) for _ in range(3)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert failures == []
    assert relay.accepted == 4


@pytest.mark.parametrize("rst", [False, True], ids=["fin", "rst"])
def test_a_connection_the_server_closed_while_idle_is_replaced_before_sending(
    sim: SimServer, relay: Relay, adapter: Adapter, rst: bool
) -> None:
    bx = adapter(relay.url)
    bx.fetch_open_orders()
    relay.drop(rst=rst)  # the server's keep-alive timeout, or a restart

    request = market()
    placed = bx.create_order(request)

    assert placed.status == "FILLED"
    assert len(sim_orders(sim, request.client_order_id)) == 1
    assert relay.accepted == 2


def test_the_simulator_restarting_between_calls(adapter: Adapter) -> None:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    with SimServer(port=port, paused=True) as first:
        bx = adapter(first.url)
        bx.fetch_open_orders()
    with SimServer(port=port, paused=True) as second:
        request = market()
        placed = bx.create_order(request)
        assert placed.status == "FILLED"
        assert len(sim_orders(second, request.client_order_id)) == 1
    assert bx.transport.connects == 2


def test_a_connection_idle_beyond_the_bound_is_not_reused(
    sim: SimServer, relay: Relay, adapter: Adapter
) -> None:
    bx = adapter(relay.url, idle_s=0.0)  # every connection is "too old" by its next call
    for _ in range(3):
        bx.fetch_open_orders()
    assert relay.accepted == 4  # time sync + 3 calls, each on a new connection


def test_a_write_that_fails_on_a_stale_connection_is_sent_once_more(
    sim: SimServer, relay: Relay, adapter: Adapter, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The reset arrives between the idle check and the write: the write fails, so nothing
    complete reached the server, and the request goes out once on a new connection."""
    bx = adapter(relay.url)
    bx.fetch_open_orders()
    relay.drop(rst=True)
    monkeypatch.setattr(transport._Connection, "usable", lambda self, now: True)

    request = market()
    placed = bx.create_order(request)

    assert placed.status == "FILLED"
    assert len(sim_orders(sim, request.client_order_id)) == 1
    assert relay.accepted == 2


def test_a_close_after_the_request_was_written_is_an_unknown_outcome_never_resent(
    sim: SimServer, relay: Relay, adapter: Adapter, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The server's close crosses the request in flight: the write succeeds, the answer is an
    EOF. The order may exist, so it is not sent again: the adapter asks by clientOrderId."""
    bx = adapter(relay.url)
    bx.fetch_open_orders()
    relay.drop(rst=False)
    monkeypatch.setattr(transport._Connection, "usable", lambda self, now: True)
    request = market()

    with pytest.raises(UnknownOrderState) as err:
        bx.create_order(request)

    # The exchange does not show it, but the request may still reach it: unknown, not "never".
    assert err.value.details["placed"] is None
    assert sim_orders(sim, request.client_order_id) == []


def test_a_server_that_accepts_and_hangs_times_out_and_is_resolved_by_client_order_id(
    sim: SimServer, relay: Relay, adapter: Adapter
) -> None:
    bx = adapter(relay.url, timeout_ms=300)
    bx.fetch_open_orders()
    relay.swallow = 1  # the next request is read and never answered (nor forwarded)
    request = market()
    started = time.monotonic()

    with pytest.raises(UnknownOrderState) as err:
        bx.create_order(request)

    assert 0.3 <= time.monotonic() - started < 1.5
    assert err.value.details["placed"] is None
    assert sim_orders(sim, request.client_order_id) == []
    assert relay.accepted == 2  # the timed-out connection is not reused


def test_a_timeout_after_the_order_was_placed_resolves_to_the_order(
    sim: SimServer, relay: Relay, adapter: Adapter
) -> None:
    bx = adapter(relay.url, timeout_ms=300)
    bx.fetch_open_orders()
    sim.admin(
        "/sim/faults", {"kind": "timeout", "count": 1, "path": "/fapi/v1/order", "holdMs": 3000}
    )
    request = market()
    started = time.monotonic()

    placed = bx.create_order(request)

    assert time.monotonic() - started < 1.5
    assert placed.status == "FILLED" and placed.client_order_id == request.client_order_id
    assert len(sim_orders(sim, request.client_order_id)) == 1


def test_nothing_listening_is_an_unknown_state_that_cannot_be_resolved(
    adapter: Adapter,
) -> None:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    bx = adapter(f"http://127.0.0.1:{port}", timeout_ms=300)

    with pytest.raises(UnknownOrderState):
        bx.fetch_open_orders()
