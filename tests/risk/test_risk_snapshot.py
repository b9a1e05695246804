"""compute_snapshot and open-order margin, with hand-worked numbers."""

from __future__ import annotations

from decimal import Decimal

import pytest

from pms.domain.enums import Side
from pms.risk import compute_snapshot, open_orders_margin, order_margin
from tests.risk.builders import BTC, ETH, INSTRUMENTS, order, pos

D = Decimal
MARKS = {BTC: D(62000), ETH: D(2900)}
POSITIONS = (pos(BTC, "0.5", "60000", 10), pos(ETH, "-5", "3000", 5))


def test_snapshot_of_a_long_and_a_short() -> None:
    snap = compute_snapshot(D(10000), POSITIONS, (), MARKS, INSTRUMENTS)

    btc, eth = snap.positions
    assert (btc.notional, btc.upnl, btc.maint_margin, btc.initial_margin) == (
        D(31000),
        D(1000),
        D(124),
        D(3100),
    )
    assert (eth.notional, eth.upnl, eth.maint_margin, eth.initial_margin) == (
        D(14500),
        D(500),
        D(58),
        D(2900),
    )
    assert snap.upnl == D(1500)
    assert snap.equity == D(11500)
    assert snap.maintenance_margin == D(182)
    assert snap.margin_ratio == D(182) / D(11500)
    assert snap.initial_margin == D(6000)
    assert snap.available == D(5500)


def test_snapshot_liquidation_prices_hold_the_other_position_at_mark() -> None:
    snap = compute_snapshot(D(10000), POSITIONS, (), MARKS, INSTRUMENTS)
    # BTC: W = 10000 - 58 + 500 = 10442; LP = (0.5*60000 - 10442) / (0.5*0.996)
    assert snap.positions[0].liq_price == (D(30000) - D(10442)) / (D("0.5") * D("0.996"))
    # ETH: W = 10000 - 124 + 1000 = 10876; LP = (5*3000 + 10876) / (5*1.004)
    assert snap.positions[1].liq_price == (D(15000) + D(10876)) / (D(5) * D("1.004"))


def test_flat_positions_are_left_out() -> None:
    snap = compute_snapshot(D(100), (pos(BTC, "0", "60000"),), (), MARKS, INSTRUMENTS)
    assert snap.positions == ()
    assert snap.margin_ratio == 0
    assert snap.available == D(100)


def test_missing_mark_is_an_error_not_a_guess() -> None:
    with pytest.raises(ValueError, match="BTC"):
        compute_snapshot(D(100), (pos(BTC, "1", "60000"),), (), {}, INSTRUMENTS)


def test_open_order_margin_charged_on_the_worse_side() -> None:
    held = {BTC: D("0.5")}
    buy = order(BTC, Side.BUY, "0.1", "61000")  # 6100 / 10 = 610
    assert open_orders_margin([buy], held, MARKS) == D(610)
    # A sell of 0.2 only closes part of the long: free.
    assert open_orders_margin([buy, order(BTC, Side.SELL, "0.2", "63000")], held, MARKS) == D(610)
    # A sell of 0.7 opens 0.2 short beyond the long: 4410 * 0.2/0.7 = 1260 > 610.
    big_sell = order(BTC, Side.SELL, "0.7", "63000")
    assert open_orders_margin([buy, big_sell], held, MARKS) == D(4410) * D("0.2") / D("0.7")


def test_reduce_only_orders_tie_up_nothing() -> None:
    ro = order(BTC, Side.BUY, "3", "61000", reduce_only=True)
    assert open_orders_margin([ro], {}, MARKS) == 0


def test_market_order_in_flight_is_priced_at_mark() -> None:
    assert open_orders_margin([order(BTC, Side.BUY, "1", None)], {}, MARKS) == D(6200)


def test_open_loss_is_added_for_orders_through_mark() -> None:
    assert order_margin(Side.BUY, D("0.1"), D(63000), D(62000), 10) == D(630) + D(100)
    assert order_margin(Side.SELL, D("0.1"), D(61000), D(62000), 10) == D(610) + D(100)
    assert order_margin(Side.SELL, D("0.1"), D(63000), D(62000), 10) == D(630)


def test_snapshot_available_subtracts_open_orders() -> None:
    orders = (order(BTC, Side.BUY, "0.1", "61000"),)
    snap = compute_snapshot(D(10000), POSITIONS, orders, MARKS, INSTRUMENTS)
    assert snap.order_margin == D(610)
    assert snap.initial_margin == D(6610)
    assert snap.available == D(4890)


def test_limit_order_without_a_mark_is_margined_at_its_own_price() -> None:
    # No ETH mark yet: the order still ties up margin, at its limit price (no open loss).
    sell = order(ETH, Side.SELL, "2", "3100", leverage=5)  # 6200 / 5
    assert open_orders_margin([sell], {}, {BTC: D(62000)}) == D(1240)

    snap = compute_snapshot(D(10000), (POSITIONS[0],), (sell,), {BTC: D(62000)}, INSTRUMENTS)
    assert snap.order_margin == D(1240)
    assert snap.available == D(11000) - D(3100) - D(1240)


def test_market_order_without_a_mark_cannot_be_priced() -> None:
    with pytest.raises(ValueError, match="ETH"):
        open_orders_margin([order(ETH, Side.BUY, "1", None)], {}, {BTC: D(62000)})
