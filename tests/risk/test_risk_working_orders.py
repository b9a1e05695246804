"""Orders already working on a side count when a new order claims to reduce a position.

SPEC §5: RESTRICTED (and worse) allows only risk-reducing orders; reduce-only reduces;
post-trade initial margin ≤ equity; per-symbol and total exposure caps. A risk-reducing order
skips the margin, leverage and exposure checks, so it must really reduce: it is risk-reducing
only if it fits in the position together with every order already working on its side, and a
reduce-only order must fit in what the reduce-only orders already working leave. Judged one by
one, ten sells of 1 against a long of 1 would each "reduce" and together open an unchecked
short of 9.

Fixtures (tests/risk/builders.py): BTC mark 60000; default rules: max leverage 20, exposure
cap 10x equity, price band 500 bps.
"""

from __future__ import annotations

from decimal import Decimal

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from pms.domain.enums import AccountStatus, Side, Tier
from pms.risk import OpenOrder, compute_snapshot, is_risk_reducing, validate
from pms.risk import checks as c
from pms.risk.context import Decision
from tests.risk.builders import BTC, context, intent, order, pos

D = Decimal


def codes(decision: Decision) -> list[str]:
    return [reason.code for reason in decision.reasons]


# --- is_risk_reducing -----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("side", "qty", "held", "working", "expected"),
    [
        (Side.SELL, "1", "1", "0", True),
        (Side.SELL, "0.5", "1", "0.5", True),  # the two fit in the long exactly
        (Side.SELL, "0.5", "1", "0.6", False),
        (Side.SELL, "1", "1", "1", False),  # the second sell of 1 against a long of 1
        (Side.BUY, "1", "-2", "1", True),
        (Side.BUY, "1", "-2", "1.5", False),
        (Side.BUY, "0.1", "1", "0", False),  # same side as the position
    ],
)
def test_is_risk_reducing_counts_the_orders_working_on_its_side(
    side: Side, qty: str, held: str, working: str, expected: bool
) -> None:
    assert is_risk_reducing(intent(side, qty), D(held), D(working)) is expected


def test_working_qty_sums_one_symbol_and_side() -> None:
    ctx = context(
        open_orders=[
            order(BTC, Side.SELL, "0.3", "61000"),
            order(BTC, Side.SELL, "0.2", "61000", reduce_only=True),
            order(BTC, Side.BUY, "5", "59000"),
            order("ETH/USDT:USDT", Side.SELL, "7", "3100"),
        ]
    )

    assert ctx.working_qty(BTC, Side.SELL) == D("0.5")
    assert ctx.working_qty(BTC, Side.SELL, reduce_only=True) == D("0.2")


# --- the checks a "reducing" order skips --------------------------------------------------------


def test_a_sell_beyond_what_working_sells_leave_of_a_long_is_margined() -> None:
    # Long 1 BTC @60000 at 20x: IM 3000, the whole equity. Five SELL 1 @61000 already work; a
    # sixth makes the worst case a short of 5: sell margin 6·3050 = 18300, excess 5/6 → 15250,
    # plus the position's 3000 → 18250 > 3000.
    ctx = context(
        wallet="3000",
        positions=[pos(BTC, "1", "60000", leverage=20)],
        open_orders=[order(BTC, Side.SELL, "1", "61000", leverage=20)] * 5,
    )

    decision = validate(intent(Side.SELL, "1", price="61000"), ctx)

    assert "INSUFFICIENT_MARGIN" in codes(decision)


def test_a_sell_beyond_what_working_sells_leave_of_a_long_meets_the_symbol_cap() -> None:
    # Cap 100000 per symbol. Long 1 BTC, three SELL 1 working, one more: worst-case sell side
    # |1 − 3 − 1| = 3 BTC → 3·61000 = 183000 > 100000.
    ctx = context(
        wallet="1000000",
        positions=[pos(BTC, "1", "60000")],
        open_orders=[order(BTC, Side.SELL, "1", "61000", leverage=20)] * 3,
        max_notional_per_symbol=D(100000),
    )

    decision = validate(intent(Side.SELL, "1", price="61000"), ctx)

    assert "EXPOSURE_LIMIT" in codes(decision)


@pytest.mark.parametrize(
    ("status", "tier"),
    [
        (AccountStatus.RESTRICTED, Tier.RESTRICTED),
        (AccountStatus.LIQUIDATING, Tier.LIQUIDATION),
        (AccountStatus.ACTIVE, Tier.ADL1),
    ],
)
def test_a_restricted_account_cannot_open_a_short_with_a_second_sell(
    status: AccountStatus, tier: Tier
) -> None:
    # Long 1 BTC with a SELL 1 working (that one reduces): a second SELL 1 can only fill into
    # a new short of 1 BTC.
    ctx = context(
        wallet="100000",
        status=status,
        tier=tier,
        positions=[pos(BTC, "1", "60000")],
        open_orders=[order(BTC, Side.SELL, "1", "61000", leverage=20)],
    )

    decision = validate(intent(Side.SELL, "1", price="61000"), ctx)

    assert codes(decision)[0] == "ACCOUNT_RESTRICTED"
    assert decision.reasons[0].message.endswith(
        "; with the 1 already working on the SELL side this order would exceed the position 1"
    )


def test_a_restricted_account_may_sell_what_working_sells_leave() -> None:
    ctx = context(
        status=AccountStatus.RESTRICTED,
        tier=Tier.RESTRICTED,
        positions=[pos(BTC, "1", "60000")],
        open_orders=[order(BTC, Side.SELL, "0.6", "61000", leverage=20)],
    )

    assert validate(intent(Side.SELL, "0.4", price="61000"), ctx).accepted
    assert not validate(intent(Side.SELL, "0.5", price="61000"), ctx).accepted


# --- reduce-only -------------------------------------------------------------------------------


def test_reduce_only_orders_together_cannot_exceed_the_position() -> None:
    # Long 1 BTC with a reduce-only SELL 1 working: a second one can only fill into a short
    # of 1 (nothing cancels a reduce-only order when the sub-account's position closes, and the
    # exchange judges reduceOnly against the master's pooled position), margined at 0.
    ctx = context(
        wallet="1000",
        positions=[pos(BTC, "1", "60000")],
        open_orders=[order(BTC, Side.SELL, "1", "61000", leverage=20, reduce_only=True)],
    )

    decision = validate(intent(Side.SELL, "1", price="61000", reduce_only=True), ctx)

    assert not decision.accepted
    assert "VALIDATION_ERROR" in codes(decision)


def test_reduce_only_fits_in_what_working_reduce_only_orders_leave() -> None:
    ctx = context(
        positions=[pos(BTC, "1", "60000")],
        open_orders=[order(BTC, Side.SELL, "0.4", "61000", reduce_only=True)],
    )

    fits = c.check_reduce_only(intent(Side.SELL, "0.6", price="61000", reduce_only=True), ctx)
    too_big = c.check_reduce_only(intent(Side.SELL, "0.7", price="61000", reduce_only=True), ctx)

    assert fits is None
    assert too_big is not None and too_big.code == "VALIDATION_ERROR"
    assert too_big.message == (
        "reduce-only qty 0.7 exceeds the position 1 less the 0.4 of reduce-only orders already "
        "working; use qty 0.6 or less, or cancel some of them"
    )
    assert too_big.details["workingReduceOnly"] == "0.4"


def test_working_orders_that_are_not_reduce_only_leave_the_reduce_only_room() -> None:
    # A plain SELL 1 may be meant to flip the position: it does not use up the room of a
    # reduce-only order (the pair is still not risk-reducing, so the other checks judge it).
    ctx = context(
        positions=[pos(BTC, "1", "60000")],
        open_orders=[order(BTC, Side.SELL, "1", "61000")],
    )

    assert c.check_reduce_only(intent(Side.SELL, "1", reduce_only=True), ctx) is None


def test_a_reduce_only_market_order_is_judged_by_the_position_alone() -> None:
    # It fills now and can only shrink the position: closing a long of 1 (close_position, an
    # engine cut) is never refused because resting take-profits already cover it, even on a
    # restricted account. Resting orders count each other (above).
    ctx = context(
        positions=[pos(BTC, "1", "60000")],
        open_orders=[order(BTC, Side.SELL, "1", "61000", reduce_only=True)],
        status=AccountStatus.RESTRICTED,
    )

    close = validate(intent(Side.SELL, "1", reduce_only=True), ctx)
    resting = validate(intent(Side.SELL, "1", price="61000", reduce_only=True), ctx)
    beyond = validate(intent(Side.SELL, "1.1", reduce_only=True), ctx)

    assert close.accepted, codes(close)
    assert not resting.accepted and "VALIDATION_ERROR" in codes(resting)
    assert not beyond.accepted


def test_a_reduce_only_market_order_counts_the_market_orders_in_flight() -> None:
    # A close sent and not yet booked (a market order, price None) still shows in the position:
    # a second close of the same long would flip it once both fill.
    ctx = context(
        positions=[pos(BTC, "1", "60000")],
        open_orders=[order(BTC, Side.SELL, "1", None, reduce_only=True)],
    )

    second = validate(intent(Side.SELL, "1", reduce_only=True), ctx)
    half = validate(intent(Side.SELL, "0.5", reduce_only=True), ctx)

    assert not second.accepted and "VALIDATION_ERROR" in codes(second)
    assert not half.accepted


# --- property: an accepted order keeps the account's margin covered ---------------------------

_qty = st.integers(min_value=1, max_value=20).map(lambda n: D(n) / 10)  # 0.1 .. 2 BTC


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    held=st.integers(min_value=-20, max_value=20).map(lambda n: D(n) / 10),
    working=st.lists(
        st.tuples(st.sampled_from([Side.BUY, Side.SELL]), _qty, st.integers(-20, 20)),
        max_size=4,
    ),
    side=st.sampled_from([Side.BUY, Side.SELL]),
    qty=_qty,
    offset=st.integers(-20, 20),
    wallet=st.integers(min_value=500, max_value=20000),
)
def test_an_accepted_order_never_leaves_less_available_than_before_or_zero(
    held: Decimal,
    working: list[tuple[Side, Decimal, int]],
    side: Side,
    qty: Decimal,
    offset: int,
    wallet: int,
) -> None:
    """What check_margin promises (post-trade IM ≤ equity), seen from the snapshot: after an
    accepted order, available ≥ min(available before, 0). A reducing order may pass with
    the account already short of margin, but never adds margin."""
    positions = [pos(BTC, str(held), "60000", leverage=20)] if held else []
    open_orders = [OpenOrder(BTC, s, q, D(60000 + 100 * off), 20, False) for s, q, off in working]
    ctx = context(
        wallet=str(wallet), positions=positions, open_orders=open_orders, max_exposure_multiple=None
    )
    price = D(60000 + 100 * offset)  # within ±5 % of mark, on tick
    before = compute_snapshot(
        ctx.wallet, ctx.positions.values(), open_orders, ctx.marks, ctx.instruments
    )

    decision = validate(intent(side, str(qty), price=str(price)), ctx)

    if not decision.accepted:
        return
    after = compute_snapshot(
        ctx.wallet,
        ctx.positions.values(),
        [*open_orders, OpenOrder(BTC, side, qty, price, 20, False)],
        ctx.marks,
        ctx.instruments,
    )
    assert after.available >= min(before.available, D(0)), (
        f"accepted {side.value} {qty}@{price} with position {held} and working {working}: "
        f"available {before.available} -> {after.available}"
    )


def test_a_frozen_account_passes_only_the_engines_reducing_orders() -> None:
    # A freeze stops the trader, not the risk engine's cuts (ADL, liquidation closes).
    ctx = context(positions=[pos(BTC, "1", "60000")], status=AccountStatus.FROZEN)

    by_engine = validate(intent(Side.SELL, "0.5", reduce_only=True, by_engine=True), ctx)
    by_trader = validate(intent(Side.SELL, "0.5", reduce_only=True), ctx)
    engine_adding = validate(intent(Side.BUY, "0.5", by_engine=True), ctx)
    engine_beyond = validate(intent(Side.SELL, "1.5", reduce_only=True, by_engine=True), ctx)

    assert by_engine.accepted, codes(by_engine)
    assert codes(by_trader) == ["ACCOUNT_FROZEN"]
    assert "ACCOUNT_FROZEN" in codes(engine_adding)
    assert "ACCOUNT_FROZEN" in codes(engine_beyond)
