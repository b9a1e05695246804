"""Which working reduce-only orders a position no longer covers (pms.risk.reduce_only).

A take-profit placed against a long stays valid on the exchange after the sub-account's long
is closed while other sub-accounts keep the master account long; its fill would open a short
nobody checked. The orders of one symbol and side are kept oldest first while they fit in
what the position can lose on that side; the rest are cancelled.
"""

from __future__ import annotations

from decimal import Decimal

import pytest
from hypothesis import given
from hypothesis import strategies as st

from pms.domain.enums import Side
from pms.risk.reduce_only import WorkingReduceOnly, reducible, uncovered

D = Decimal
BTC, ETH = "BTC/USDT:USDT", "ETH/USDT:USDT"


def ro(order_id: int, side: Side, remaining: str, symbol: str = BTC) -> WorkingReduceOnly:
    return WorkingReduceOnly(order_id, symbol, side, D(remaining))


@pytest.mark.parametrize(
    ("position", "side", "expected"),
    [
        ("0.5", Side.SELL, "0.5"),
        ("0.5", Side.BUY, "0"),
        ("-0.5", Side.BUY, "0.5"),
        ("-0.5", Side.SELL, "0"),
        ("0", Side.SELL, "0"),
        ("0", Side.BUY, "0"),
    ],
)
def test_reducible(position: str, side: Side, expected: str) -> None:
    assert reducible(D(position), side) == D(expected)


def test_a_take_profit_outliving_its_position_is_uncovered() -> None:
    tp = ro(1, Side.SELL, "0.5")
    assert uncovered([tp], {}) == [tp]  # flat
    assert uncovered([tp], {BTC: D("-0.2")}) == [tp]  # flipped short: a SELL only adds
    assert uncovered([tp], {BTC: D("0.5")}) == []
    assert uncovered([tp], {BTC: D("0.7")}) == []


def test_oldest_kept_first_and_a_smaller_later_one_still_fits() -> None:
    first, big, small = ro(1, Side.SELL, "0.2"), ro(2, Side.SELL, "0.3"), ro(3, Side.SELL, "0.1")
    # A long of 0.3: 0.2 kept; 0.3 would make 0.5, dropped; 0.1 makes 0.3, kept.
    assert uncovered([first, big, small], {BTC: D("0.3")}) == [big]


def test_sides_and_symbols_are_judged_apart() -> None:
    orders = [
        ro(1, Side.SELL, "0.5"),
        ro(2, Side.BUY, "0.5"),  # on a long: a reduce-only BUY can never reduce it
        ro(3, Side.BUY, "2", ETH),
        ro(4, Side.BUY, "2", ETH),
    ]
    assert uncovered(orders, {BTC: D("0.5"), ETH: D("-3")}) == [orders[1], orders[3]]


remainders = st.decimals(min_value=D("0.001"), max_value=D(5), places=3)
positions = st.decimals(min_value=D(-5), max_value=D(5), places=3)


@given(
    st.lists(st.tuples(st.sampled_from([Side.BUY, Side.SELL]), remainders), max_size=12),
    positions,
)
def test_what_is_kept_fits_and_nothing_that_fits_is_dropped(
    specs: list[tuple[Side, Decimal]], position: Decimal
) -> None:
    orders = [WorkingReduceOnly(i, BTC, side, left) for i, (side, left) in enumerate(specs)]
    dropped = uncovered(orders, {BTC: position})
    kept = [o for o in orders if o not in dropped]
    for side in Side:
        room = reducible(position, side)
        kept_qty = sum((o.remaining for o in kept if o.side is side), D(0))
        assert kept_qty <= room
        # Greedy oldest first: each dropped order did not fit in what the older kept ones
        # left at its turn.
        for o in dropped:
            if o.side is side:
                before = sum(
                    (k.remaining for k in kept if k.side is side and k.order_id < o.order_id),
                    D(0),
                )
                assert before + o.remaining > room
