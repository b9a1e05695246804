"""The user-data stream against the simulator: fills booked once across drops, listen-key
expiry and restarts; order-sync enqueued after every (re)connect."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest
import redis

from pms.app import App
from pms.config import Settings
from pms.sim.runner import SimServer
from tests.streaming.conftest import StreamerThread
from tests.streaming.helpers import (
    fills_of,
    market_buy,
    order_status,
    resting_buy,
    sim_trade_ids,
    sync_messages,
    sync_queue_len,
)
from tests.support import wait_for


def run_order_sync(app: App) -> None:
    try:
        from pms.sync.orders import sync_orders
    except ImportError:  # pragma: no cover - the order-sync actor is another engineer's
        pytest.skip("pms.sync.orders.sync_orders is not available yet")
    sync_orders(app)


@pytest.fixture(autouse=True)
def reset_prices(sim: SimServer) -> None:
    sim.admin("/sim/price", {"symbol": "BTCUSDT", "price": "60000"})


def user_connected(st: StreamerThread, reconnects: int = 0) -> bool:
    assert st.streamer.board is not None
    health = st.streamer.board.stream("user")
    return health.connected and health.reconnects >= reconnects


def test_fill_on_the_stream_is_booked_once_with_order_state(
    sim: SimServer, app: App, make_streamer: Callable[..., StreamerThread]
) -> None:
    st = make_streamer()
    wait_for(lambda: user_connected(st), 5, message="user stream")
    coid = resting_buy(app, price="59000")

    sim.admin("/sim/price", {"symbol": "BTCUSDT", "price": "58900"})

    wait_for(lambda: fills_of(app, coid), 3, message="fill booked")
    trade_ids = sim_trade_ids(app, sim.admin("/sim/state"), coid)
    assert [t for t, _ in fills_of(app, coid)] == trade_ids
    assert {src for _, src in fills_of(app, coid)} == {"stream"}
    wait_for(lambda: order_status(app, coid) == "FILLED", 3, message="order FILLED")


def test_cancel_on_the_stream_updates_the_order(
    sim: SimServer, app: App, make_streamer: Callable[..., StreamerThread]
) -> None:
    st = make_streamer()
    wait_for(lambda: user_connected(st), 5, message="user stream")
    coid = resting_buy(app, price="58000")
    from pms.exchange.ccxt_factory import make_binanceusdm

    ex = make_binanceusdm(sim.url, sim.api_key, sim.secret)
    # Cancelled behind the engine's back (e.g. in the exchange UI): the stream tells us.
    ex.fapiPrivateDeleteOrder({"symbol": "BTCUSDT", "origClientOrderId": coid})

    wait_for(lambda: order_status(app, coid) == "CANCELED", 3, message="order CANCELED")


def test_all_sockets_dropped_reconnects_and_books_missed_fill_once(
    sim: SimServer,
    app: App,
    sim_settings: Settings,
    redis_client: redis.Redis,
    make_streamer: Callable[..., StreamerThread],
) -> None:
    st = make_streamer()
    wait_for(lambda: user_connected(st), 5, message="user stream")
    missed = resting_buy(app, price="59000")
    later = resting_buy(app, price="58500")
    queued = sync_queue_len(redis_client, sim_settings)

    # The fill's TRADE event never reaches us (we are disconnected while it happens).
    sim.admin("/sim/userstream/drop", {"count": 1})
    dropped = sim.admin("/sim/ws/drop", {})
    sim.admin("/sim/price", {"symbol": "BTCUSDT", "price": "58900"})
    assert dropped["dropped"] >= 2

    wait_for(lambda: user_connected(st, reconnects=1), 2, message="user stream back")
    assert st.streamer.board is not None
    wait_for(lambda: st.streamer.board.stream("market").reconnects >= 1, 2, message="market")
    sim.admin("/sim/price", {"symbol": "BTCUSDT", "price": "58950.5"})
    from tests.streaming.test_market import cached

    wait_for(
        lambda: (
            (cached(redis_client, sim_settings, "price", "BTC/USDT:USDT") or {}).get("mark")
            == "58950.5"
        ),
        2,
        message="prices flowing again",
    )
    # An order-sync was enqueued for the reconnect.
    wait_for(lambda: sync_queue_len(redis_client, sim_settings) > queued, 2, message="sync")
    reasons = {m["args"][0]["reason"] for m in sync_messages(redis_client, sim_settings)}
    assert reasons == {"user-stream-reconnect"}
    assert fills_of(app, missed) == []  # nothing on the stream for it

    # What the sync actor does: the missed fill is booked, once, even when run twice.
    run_order_sync(app)
    run_order_sync(app)
    assert [t for t, _ in fills_of(app, missed)] == sim_trade_ids(
        app, sim.admin("/sim/state"), missed
    )
    assert [src for _, src in fills_of(app, missed)] == ["sync"]

    # Fills after the reconnect arrive on the stream and are booked once.
    sim.admin("/sim/price", {"symbol": "BTCUSDT", "price": "58400"})
    wait_for(lambda: fills_of(app, later), 3, message="fill after reconnect")
    run_order_sync(app)
    assert [t for t, _ in fills_of(app, later)] == sim_trade_ids(
        app, sim.admin("/sim/state"), later
    )
    assert [src for _, src in fills_of(app, later)] == ["stream"]


def test_listen_key_expired_recovers_without_losing_a_fill(
    sim: SimServer, app: App, make_streamer: Callable[..., StreamerThread]
) -> None:
    st = make_streamer()
    wait_for(lambda: user_connected(st), 5, message="user stream")
    assert st.streamer.user is not None
    old_key = st.streamer.user.listen_key
    coid = resting_buy(app, price="59000")

    sim.admin("/sim/listenkeys/expire", {})
    sim.admin("/sim/price", {"symbol": "BTCUSDT", "price": "58900"})  # fills around the expiry

    wait_for(lambda: user_connected(st, reconnects=1), 3, message="new listen key")
    new_key = st.streamer.user.listen_key
    assert new_key is not None and new_key != old_key
    assert sim.admin("/sim/state")["listenKey"] is not None
    run_order_sync(app)  # what the enqueued sync does: books it if the stream missed it
    wait_for(lambda: fills_of(app, coid), 3, message="fill booked")
    assert [t for t, _ in fills_of(app, coid)] == sim_trade_ids(app, sim.admin("/sim/state"), coid)

    # The new key carries fills.
    second = resting_buy(app, price="58500")
    sim.admin("/sim/price", {"symbol": "BTCUSDT", "price": "58400"})
    wait_for(lambda: fills_of(app, second), 3, message="fill on the new key")
    assert [src for _, src in fills_of(app, second)] == ["stream"]


def test_restart_books_nothing_twice_and_caches_come_back(
    sim: SimServer,
    app: App,
    sim_settings: Settings,
    redis_client: redis.Redis,
    make_streamer: Callable[..., StreamerThread],
) -> None:
    from tests.streaming.test_market import book_synced, cached

    first = make_streamer()
    wait_for(lambda: user_connected(first), 5, message="user stream")
    seen = resting_buy(app, price="59000")
    sim.admin("/sim/price", {"symbol": "BTCUSDT", "price": "58900"})
    wait_for(lambda: fills_of(app, seen), 3, message="fill booked")
    while_down = resting_buy(app, price="58500")

    first.stop()
    sim.admin("/sim/price", {"symbol": "BTCUSDT", "price": "58400"})  # fills while we are down
    second = make_streamer()

    wait_for(lambda: user_connected(second), 5, message="user stream after restart")
    wait_for(
        lambda: (
            (cached(redis_client, sim_settings, "price", "BTC/USDT:USDT") or {}).get("mark")
            == "58400.0"
        ),
        3,
        message="price after restart",
    )
    wait_for(lambda: book_synced(redis_client, sim_settings, sim), 3, message="book")
    assert second.streamer.syncs_enqueued == 1
    run_order_sync(app)
    state = sim.admin("/sim/state")
    assert [t for t, _ in fills_of(app, seen)] == sim_trade_ids(app, state, seen)
    assert [t for t, _ in fills_of(app, while_down)] == sim_trade_ids(app, state, while_down)
    assert len(fills_of(app, seen)) == 1 and len(fills_of(app, while_down)) == 1


def test_market_order_fill_is_booked_by_the_stream_while_it_is_connected(
    sim: SimServer, app: App, make_streamer: Callable[..., StreamerThread]
) -> None:
    """While the user stream is up the worker answers and leaves the fill to the stream
    (the exchange is not asked for the order's trades); once it is down the worker books
    the fill itself again."""
    st = make_streamer()
    wait_for(lambda: user_connected(st), 5, message="user stream")
    wait_for(app.orders.stream_books, 5, message="workers see the user stream")
    calls: list[str] = []
    real_call = app.exchange._call  # type: ignore[attr-defined]

    def counting_call(action: str, method: str, params: dict[str, Any], **kw: Any) -> Any:
        calls.append(method)
        return real_call(action, method, params, **kw)

    app.exchange._call = counting_call  # type: ignore[attr-defined]
    try:
        coid = market_buy(app)
        wait_for(lambda: order_status(app, coid) == "FILLED", 5, message="order FILLED")
        assert {src for _, src in fills_of(app, coid)} == {"stream"}
        assert [t for t, _ in fills_of(app, coid)] == sim_trade_ids(
            app, sim.admin("/sim/state"), coid
        )
        assert not [c for c in calls if "UserTrades" in c], calls

        st.stop()
        wait_for(lambda: not app.orders.stream_books(), 5, message="stream seen down")
        calls.clear()
        coid = market_buy(app)  # booked before the command's steps return
        assert order_status(app, coid) == "FILLED"
        assert {src for _, src in fills_of(app, coid)} == {"rest"}
        assert [c for c in calls if "UserTrades" in c], calls
    finally:
        app.exchange._call = real_call  # type: ignore[attr-defined]


def test_an_idle_user_stream_stays_connected_past_the_silence_limit(
    make_streamer: Callable[..., StreamerThread],
) -> None:
    """No account activity means no user-stream message: the silence rule, meant for market
    data, must not reconnect it (each reconnect also ran an order-sync). Market data on the
    same policy is still held to it."""
    from pms.streaming.reconnect import ReconnectPolicy

    quick = ReconnectPolicy(
        initial_s=0.05, max_s=0.5, healthy_after_s=1.0, silence_s=0.3, watchdog_every_s=0.05
    )
    st = make_streamer(policy=quick, symbols=("SOL/USDT:USDT",))  # quiet: no price moves
    wait_for(lambda: user_connected(st), 5, message="user stream up")
    assert st.streamer.board is not None
    market = st.streamer.board.stream("market")
    # Twice: by then the user stream has been silent for well over the limit too.
    wait_for(lambda: market.reconnects >= 2, 5, message="a silent market stream reconnects")
    user = st.streamer.board.stream("user")
    assert user.connected and user.reconnects == 0
