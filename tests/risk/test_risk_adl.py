"""ADL cut plans."""

from __future__ import annotations

from decimal import Decimal

from pms.domain.enums import Side, Tier
from pms.risk import AdlCut, compute_snapshot, plan_adl
from tests.risk.builders import BTC, ETH, INSTRUMENTS, instrument, pos

D = Decimal
MARKS = {BTC: D(60000), ETH: D(3000)}
# BTC MM = 600000*0.0065 - 950 = 2950; ETH MM = 300000*0.005 - 50 = 1450; ratio 4400/4800.
POSITIONS = (pos(BTC, "10", "60000", 10), pos(ETH, "100", "3000", 10))


def test_adl1_cuts_the_biggest_maintenance_margin_by_a_quarter() -> None:
    snap = compute_snapshot(D(4800), POSITIONS, (), MARKS, INSTRUMENTS)
    assert snap.maintenance_margin == D(4400)

    plan = plan_adl(snap, Tier.ADL1, INSTRUMENTS)

    # 7.5 BTC left: 450000*0.005 - 50 = 2200; total 3650/4800 = 0.76 < 0.80.
    assert plan.cuts == (AdlCut(BTC, Side.SELL, D("2.5"), False),)
    assert plan.projected_maint_margin == D(3650)
    assert plan.projected_ratio == D(3650) / D(4800)


def test_adl2_cuts_by_half() -> None:
    snap = compute_snapshot(D(4800), POSITIONS, (), MARKS, INSTRUMENTS)
    plan = plan_adl(snap, Tier.ADL2, INSTRUMENTS)
    assert plan.cuts == (AdlCut(BTC, Side.SELL, D(5), False),)
    assert plan.projected_maint_margin == D(2900)


def test_repeated_cuts_move_to_the_next_biggest_and_merge_per_symbol() -> None:
    snap = compute_snapshot(D(3000), POSITIONS, (), MARKS, INSTRUMENTS)  # ratio 1.47
    plan = plan_adl(snap, Tier.ADL1, INSTRUMENTS)
    assert plan.projected_ratio < D("0.80")
    assert {c.symbol for c in plan.cuts} == {BTC, ETH}
    assert all(c.side is Side.SELL for c in plan.cuts)


def test_short_positions_are_cut_with_buys() -> None:
    snap = compute_snapshot(D(3500), (pos(BTC, "-10", "60000"),), (), MARKS, INSTRUMENTS)
    plan = plan_adl(snap, Tier.ADL1, INSTRUMENTS)
    assert plan.cuts[0].side is Side.BUY


def test_a_cut_leaving_less_than_min_qty_closes_the_position() -> None:
    instruments = {BTC: instrument(BTC, min_qty="0.01")}
    # 25% of 0.015 is 0.003, raised to the 0.01 minimum, leaving 0.005 < 0.01: close it all.
    snap = compute_snapshot(D(3), (pos(BTC, "0.015", "60000"),), (), MARKS, instruments)
    plan = plan_adl(snap, Tier.ADL1, instruments)
    assert plan.cuts == (AdlCut(BTC, Side.SELL, D("0.015"), True),)
    assert plan.projected_ratio == 0


def test_negative_equity_closes_everything() -> None:
    snap = compute_snapshot(D(-10), POSITIONS, (), MARKS, INSTRUMENTS)
    plan = plan_adl(snap, Tier.ADL2, INSTRUMENTS)
    assert all(c.closes_position for c in plan.cuts)
    assert sum(c.qty for c in plan.cuts if c.symbol == BTC) == D(10)


def test_other_tiers_plan_nothing() -> None:
    snap = compute_snapshot(D(4800), POSITIONS, (), MARKS, INSTRUMENTS)
    assert plan_adl(snap, Tier.RESTRICTED, INSTRUMENTS).cuts == ()
    assert plan_adl(snap, Tier.LIQUIDATION, INSTRUMENTS).cuts == ()
