"""Hand-worked numbers for the margin formulas and liquidation prices (BTCUSDT brackets)."""

from __future__ import annotations

from decimal import Decimal

from pms.risk import (
    RATIO_BEYOND_LIQUIDATION,
    initial_margin,
    liquidation_price,
    maintenance_margin,
    margin_ratio,
    notional,
    unrealized_pnl,
)
from pms.risk.margin import bracket_table
from tests.risk.builders import BTC, INSTRUMENTS, brackets

D = Decimal
BTC_I = INSTRUMENTS[BTC]


def test_cum_makes_brackets_continuous_like_binance() -> None:
    cums = [b.cum for b in brackets()[:5]]
    assert cums == [D(0), D(50), D(950), D(11450), D(131450)]


def test_notional_and_upnl_signs() -> None:
    assert notional(D("-0.5"), D(60000)) == D(30000)
    assert unrealized_pnl(D("0.5"), D(60000), D(61000)) == D(500)
    assert unrealized_pnl(D("-0.5"), D(60000), D(61000)) == D(-500)


def test_initial_margin_is_notional_over_leverage() -> None:
    assert initial_margin(D(30000), 20) == D(1500)


def test_maintenance_margin_uses_the_bracket_of_the_notional() -> None:
    assert maintenance_margin(D(30000), BTC_I) == D(120)  # 30000 * 0.004
    assert maintenance_margin(D(100000), BTC_I) == D(450)  # 100000 * 0.005 - 50
    assert maintenance_margin(D(1000000), BTC_I) == D(5550)  # 1e6 * 0.0065 - 950
    # At a floor the new bracket starts exactly where the old one ended.
    assert maintenance_margin(D(50000), BTC_I) == D(200) == D(50000) * D("0.004")


def test_last_bracket_is_open_ended() -> None:
    assert bracket_table(BTC_I).row_for(D(5_000_000_000)).max_leverage == 1


def test_margin_ratio_definitions_at_the_edges() -> None:
    assert margin_ratio(D(120), D(1000)) == D("0.12")
    assert margin_ratio(D(0), D(-50)) == D(0)  # nothing at risk: not a liquidation
    assert margin_ratio(D(120), D(0)) == RATIO_BEYOND_LIQUIDATION
    assert margin_ratio(D(120), D(-1)) >= 1


def test_long_liquidation_price_is_re_evaluated_in_its_own_bracket() -> None:
    table = bracket_table(BTC_I)
    # Bracket 1 gives 50000/0.996 = 50200.8 whose notional is in bracket 2: recompute there.
    lp = liquidation_price(D(1), D(60000), D(10000), table)
    assert lp == D(49950) / D("0.995")
    # At that price equity (wallet + uPnL) equals maintenance margin.
    assert lp is not None
    equity, maint = D(10000) + (lp - D(60000)), lp * D("0.005") - D(50)
    assert abs(equity - maint) < D("1e-20")


def test_long_liquidation_price_moving_down_a_bracket() -> None:
    table = bracket_table(BTC_I)
    # Starting in bracket 2 (notional 60000) gives 40271, in bracket 1: recompute there.
    lp = liquidation_price(D(1), D(60000), D(19880), table, start=1)
    assert lp == D(40120) / D("0.996")


def test_short_liquidation_price() -> None:
    lp = liquidation_price(D(-1), D(60000), D(10000), bracket_table(BTC_I), start=1)
    assert lp == D(70050) / D("1.005")


def test_no_liquidation_price_for_a_fully_collateralised_long() -> None:
    assert liquidation_price(D(1), D(60000), D(70000), bracket_table(BTC_I)) is None


def test_no_liquidation_price_for_a_flat_position() -> None:
    assert liquidation_price(D(0), D(60000), D(10000), bracket_table(BTC_I)) is None


def test_short_under_water_at_every_price_has_no_liquidation_price() -> None:
    assert liquidation_price(D(-1), D(100), D(-1000), bracket_table(BTC_I)) is None
