"""Each pre-trade check, passing and failing, with the message a trader would see."""

from __future__ import annotations

from dataclasses import replace
from decimal import Decimal

import pytest

from pms.domain.enums import AccountStatus, OrderType, Side, Tier, TimeInForce
from pms.errors import InsufficientMargin
from pms.risk import OrderIntent, Quote, is_risk_reducing, validate
from pms.risk import checks as c
from tests.risk.builders import BTC, ETH, INSTRUMENTS, context, instrument, intent, order, pos

D = Decimal


def code(reason: object) -> str | None:
    return getattr(reason, "code", None)


# --- is_risk_reducing ------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("side", "qty", "held", "expected"),
    [
        (Side.SELL, "1", "1", True),
        (Side.SELL, "0.5", "1", True),
        (Side.SELL, "1.5", "1", False),  # would flip to short
        (Side.BUY, "0.5", "1", False),
        (Side.BUY, "1", "-1", True),
        (Side.SELL, "1", "0", False),
        (Side.SELL, "0", "1", False),
    ],
)
def test_is_risk_reducing(side: Side, qty: str, held: str, expected: bool) -> None:
    # Nothing else working on the order's side (tests/risk/test_risk_working_orders.py).
    assert is_risk_reducing(intent(side, qty), D(held)) is expected


# --- account ---------------------------------------------------------------------------------


@pytest.mark.parametrize("status", [AccountStatus.FROZEN, AccountStatus.CLOSED])
def test_frozen_and_closed_accounts_trade_nothing(status: AccountStatus) -> None:
    ctx = context(status=status, positions=[pos(BTC, "1", "60000")])
    assert code(c.check_account_status(intent(Side.SELL, "1"), ctx)) == "ACCOUNT_FROZEN"


@pytest.mark.parametrize("status", [AccountStatus.RESTRICTED, AccountStatus.LIQUIDATING])
def test_restricted_accounts_only_reduce(status: AccountStatus) -> None:
    ctx = context(status=status, positions=[pos(BTC, "1", "60000")])
    assert code(c.check_account_status(intent(Side.BUY, "0.1"), ctx)) == "ACCOUNT_RESTRICTED"
    assert c.check_account_status(intent(Side.SELL, "0.5"), ctx) is None


def test_a_restricted_tier_restricts_an_active_account() -> None:
    ctx = context(tier=Tier.ADL1, positions=[pos(BTC, "1", "60000")])
    assert code(c.check_account_status(intent(Side.BUY, "0.1"), ctx)) == "ACCOUNT_RESTRICTED"
    assert c.check_account_status(intent(Side.BUY, "0.1"), context(tier=Tier.WARNING)) is None


def test_order_rate() -> None:
    assert c.check_order_rate(intent(), context(recent_order_count=599)) is None
    reason = c.check_order_rate(intent(), context(recent_order_count=600))
    assert code(reason) == "RATE_LIMITED"


# --- instrument and shape ----------------------------------------------------------------------


def test_symbol_must_be_known_and_trading() -> None:
    assert code(c.check_symbol(intent(symbol="DOGE/USDT:USDT"), context())) == "UNKNOWN_SYMBOL"
    halted = context(instruments={BTC: instrument(BTC, trading=False)})
    assert code(c.check_symbol(intent(), halted)) == "EXCHANGE_REJECTED"
    assert c.check_symbol(intent(), context()) is None


def test_market_data_must_be_there() -> None:
    ctx = context(marks={ETH: D(3000)}, positions=[pos(ETH, "1", "3000")])
    reason = c.check_market_data(intent(), ctx)
    assert code(reason) == "EXCHANGE_UNAVAILABLE"
    assert c.check_market_data(intent(), context()) is None


@pytest.mark.parametrize("mark", ["0", "-1", "NaN", "Infinity"])
def test_an_unusable_mark_is_refused_like_a_missing_one(mark: str) -> None:
    # A mark of 0 would make every notional and margin 0 and wave the order through: 100 BTC
    # on a 1 USDT account. It is reported once, as missing market data (retryable).
    ctx = context(wallet="1", marks={BTC: D(mark), ETH: D(3000)})

    decision = validate(intent(Side.BUY, "100"), ctx)

    assert [r.code for r in decision.reasons] == ["EXCHANGE_UNAVAILABLE"]
    assert decision.reasons[0].message == (
        f"unusable mark price for BTC/USDT:USDT ({mark}); retry shortly"
    )
    assert decision.reasons[0].details == {"symbols": [BTC]}


def test_an_unusable_mark_of_a_held_symbol_is_refused_too() -> None:
    ctx = context(marks={BTC: D(60000), ETH: D(0)}, positions=[pos(ETH, "1", "3000")])

    reason = c.check_market_data(intent(), ctx)

    assert code(reason) == "EXCHANGE_UNAVAILABLE"
    assert reason is not None and reason.details == {"symbols": [ETH]}


@pytest.mark.parametrize(("bid", "ask"), [("0", "60010"), ("59990", "-1"), ("NaN", "60010")])
def test_an_unusable_quote_is_refused_like_a_missing_mark(bid: str, ask: str) -> None:
    ctx = replace(context(), quotes={BTC: Quote(D(bid), D(ask))})

    decision = validate(intent(Side.BUY, "0.01"), ctx)

    assert [r.code for r in decision.reasons] == ["EXCHANGE_UNAVAILABLE"]
    assert f"unusable quote for BTC/USDT:USDT (bid {bid}, ask {ask})" in (
        decision.reasons[0].message
    )


@pytest.mark.parametrize(
    "bad",
    [
        intent(qty="0"),
        intent(qty="-1"),
        OrderIntent(BTC, Side.BUY, D(1), OrderType.LIMIT, None),
        intent(post_only=True),
        intent(price="60000", post_only=True, time_in_force=TimeInForce.IOC),
        intent(leverage=0),
    ],
)
def test_order_shape_failures(bad: OrderIntent) -> None:
    assert code(c.check_order_shape(bad, context())) == "VALIDATION_ERROR"


def test_order_shape_passes_a_plain_limit_order() -> None:
    assert c.check_order_shape(intent(price="60000", post_only=True), context()) is None


def test_qty_must_sit_on_the_step() -> None:
    reason = c.check_qty_filters(intent(qty="0.0015"), context())
    assert reason is not None
    assert reason.code == "VALIDATION_ERROR"
    assert reason.message == "qty 0.0015 is not a multiple of step 0.001"


def test_qty_range_uses_market_limits_for_market_orders() -> None:
    assert code(c.check_qty_filters(intent(qty="200"), context())) == "VALIDATION_ERROR"
    assert c.check_qty_filters(intent(qty="200", price="60000"), context()) is None
    assert code(c.check_qty_filters(intent(qty="2000", price="60000"), context())) == (
        "VALIDATION_ERROR"
    )
    small = context(instruments={BTC: instrument(BTC, min_qty="0.01")})
    reason = c.check_qty_filters(intent(qty="0.005"), small)
    assert reason is not None and "below the minimum 0.01" in reason.message


def test_price_must_sit_on_the_tick() -> None:
    reason = c.check_price_filters(intent(price="60000.05"), context())
    assert reason is not None
    assert reason.message == "price 60000.05 is not a multiple of tick 0.1"
    assert c.check_price_filters(intent(price="60000.1"), context()) is None


def test_min_notional_and_the_reduce_only_exemption() -> None:
    reason = c.check_min_notional(intent(qty="0.001"), context())  # 60 < 100
    assert reason is not None and reason.code == "VALIDATION_ERROR"
    assert "below the minimum 100" in reason.message
    assert c.check_min_notional(intent(qty="0.002"), context()) is None  # 120
    dust = context(positions=[pos(BTC, "0.001", "60000")])
    assert c.check_min_notional(intent(Side.SELL, "0.001", reduce_only=True), dust) is None


def test_market_orders_are_margined_at_the_side_of_the_book() -> None:
    ctx = replace(context(), quotes={BTC: Quote(D(59990), D(60010))})
    assert ctx.margin_price(intent(Side.BUY)) == D(60010)
    assert ctx.margin_price(intent(Side.SELL)) == D(59990)
    assert context().margin_price(intent(Side.SELL)) == D(60000)


def test_limit_price_band_around_mark() -> None:
    assert c.check_price_band(intent(price="63000"), context()) is None  # exactly 5%
    reason = c.check_price_band(intent(price="63000.1"), context())
    assert reason is not None and reason.code == "VALIDATION_ERROR"
    assert "57000-63000" in reason.message
    assert c.check_price_band(intent(price="63000.1"), context(price_band_bps=1000)) is None


def test_the_exchanges_percent_price_filter_holds_whatever_the_rules_band() -> None:
    """A wider band in the risk rules does not let through what the exchange refuses
    (PERCENT_PRICE: -4016 for a BUY above mark × up, -4024 for a SELL below mark × down):
    the trader hears why before anything is sent, not EXCHANGE_REJECTED after."""
    btc = replace(INSTRUMENTS[BTC], percent_up=D("1.05"), percent_down=D("0.95"))
    wide = context(price_band_bps=2000, instruments={**INSTRUMENTS, BTC: btc})
    assert c.check_price_band(intent(Side.BUY, price="63000"), wide) is None  # exactly 1.05
    refused = c.check_price_band(intent(Side.BUY, price="63000.1"), wide)
    assert code(refused) == "VALIDATION_ERROR"
    assert refused is not None and "above 63000" in refused.message
    assert c.check_price_band(intent(Side.SELL, price="57000"), wide) is None
    assert "below 57000" in c.check_price_band(intent(Side.SELL, price="56999.9"), wide).message  # type: ignore[union-attr]
    # Only the side that would trade through the mark is limited.
    assert c.check_price_band(intent(Side.SELL, price="70000"), wide) is None
    assert c.check_price_band(intent(Side.BUY, price="50000"), wide) is None


def test_reduce_only_must_reduce() -> None:
    long = context(positions=[pos(BTC, "1", "60000")])
    assert c.check_reduce_only(intent(Side.SELL, "1", reduce_only=True), long) is None
    for bad, fragment in [
        (intent(Side.BUY, "0.1", reduce_only=True), "would increase the long"),
        (intent(Side.SELL, "2", reduce_only=True), "exceeds the position 1"),
    ]:
        reason = c.check_reduce_only(bad, long)
        assert reason is not None and fragment in reason.message
    flat = c.check_reduce_only(intent(Side.SELL, "1", reduce_only=True), context())
    assert flat is not None and "no BTC/USDT:USDT position" in flat.message


# --- economics ---------------------------------------------------------------------------------


def test_leverage_against_the_rules_and_the_bracket() -> None:
    reason = c.check_leverage(intent(leverage=25), context())
    assert code(reason) == "LEVERAGE_TOO_HIGH"
    assert reason is not None and "your risk rules" in reason.message
    wide = context(max_leverage=125)
    assert c.check_leverage(intent(qty="0.5", leverage=125), wide) is None  # 30000: 125x
    reason = c.check_leverage(intent(qty="1", leverage=125), wide)  # 60000: bracket 2, 100x
    assert reason is not None and "exchange bracket" in reason.message
    assert c.check_leverage(intent(qty="1", leverage=100), wide) is None


def test_reducing_keeps_working_after_the_rule_was_lowered() -> None:
    ctx = context(max_leverage=5, positions=[pos(BTC, "1", "60000", leverage=50)])
    assert c.check_leverage(intent(Side.SELL, "1"), ctx) is None
    assert code(c.check_leverage(intent(Side.BUY, "0.1"), ctx)) == "LEVERAGE_TOO_HIGH"


def test_margin_check() -> None:
    ctx = context(wallet="1000")
    # 1 BTC at 20x needs 3000 of a 1000 equity.
    reason = c.check_margin(intent(qty="1"), ctx)
    assert reason is not None and reason.code == InsufficientMargin.code
    assert reason.message == "insufficient margin: the order needs 3000 but 1000 is available"
    assert c.check_margin(intent(qty="0.3"), ctx) is None  # 900
    assert c.check_margin(intent(qty="0.3", leverage=10), ctx) is not None  # 1800


def test_margin_counts_working_orders() -> None:
    ctx = context(wallet="1000", open_orders=[order(BTC, Side.BUY, "0.1", "59000", leverage=10)])
    assert c.check_margin(intent(qty="0.3"), ctx) is not None  # 590 + 900 > 1000


def test_risk_reducing_order_passes_with_negative_equity() -> None:
    ctx = context(wallet="100", positions=[pos(BTC, "1", "60000")], marks={BTC: D(59000)})
    sell = intent(Side.SELL, "0.5")
    assert c.check_margin(sell, ctx) is None
    assert validate(sell, ctx).accepted


def test_per_symbol_notional_cap_counts_working_orders() -> None:
    ctx = context(max_notional_per_symbol=D(50000))
    assert c.check_symbol_exposure(intent(qty="0.5"), ctx) is None
    assert code(c.check_symbol_exposure(intent(qty="1"), ctx)) == "EXPOSURE_LIMIT"
    busy = context(
        max_notional_per_symbol=D(50000), open_orders=[order(BTC, Side.BUY, "0.4", "60000")]
    )
    assert code(c.check_symbol_exposure(intent(qty="0.5"), busy)) == "EXPOSURE_LIMIT"


def test_total_exposure_cap_is_a_multiple_of_equity() -> None:
    ctx = context(max_exposure_multiple=D(2), positions=[pos(ETH, "5", "3000")])
    assert c.check_total_exposure(intent(qty="0.08"), ctx) is None  # 15000 + 4800
    reason = c.check_total_exposure(intent(qty="0.1"), ctx)  # 15000 + 6000 > 20000
    assert reason is not None and reason.code == "EXPOSURE_LIMIT"


# --- validate ---------------------------------------------------------------------------------


def test_validate_accepts_a_good_order() -> None:
    decision = validate(intent(qty="0.01", price="60000"), context())
    assert decision.accepted
    assert decision.primary is None and decision.to_error() is None


def test_validate_reports_every_reason_primary_first() -> None:
    decision = validate(
        intent(qty="0.0015", price="70000.05"), context(status=AccountStatus.FROZEN)
    )
    assert not decision.accepted
    assert [r.code for r in decision.reasons] == [
        "ACCOUNT_FROZEN",
        "VALIDATION_ERROR",
        "VALIDATION_ERROR",
        "VALIDATION_ERROR",
    ]
    error = decision.to_error()
    assert error is not None and error["code"] == "ACCOUNT_FROZEN"
    assert len(error["details"]["reasons"]) == 4
    assert decision.reasons[0].to_exception().code == "ACCOUNT_FROZEN"


def test_validate_unknown_symbol_is_reported_once() -> None:
    decision = validate(intent(symbol="DOGE/USDT:USDT"), context())
    assert [r.code for r in decision.reasons] == ["UNKNOWN_SYMBOL"]


@pytest.mark.parametrize("bad", [intent(qty="NaN"), intent(price="Infinity"), intent(price="sNaN")])
def test_validate_refuses_non_finite_numbers_without_raising(bad: OrderIntent) -> None:
    decision = validate(bad, context())
    assert [r.code for r in decision.reasons] == ["VALIDATION_ERROR"]
