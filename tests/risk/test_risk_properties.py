"""Property-based tests (hypothesis) of the risk math, the checks and the tiers."""

from __future__ import annotations

import itertools
from decimal import Decimal

from hypothesis import given, settings
from hypothesis import strategies as st

from pms.domain.enums import AccountStatus, OrderType, Side, Tier, TimeInForce
from pms.errors import ERROR_CODES
from pms.risk import (
    CHECKS,
    DEFAULT_THRESHOLDS,
    Decision,
    OrderIntent,
    RiskContext,
    RiskPosition,
    RiskRules,
    TierThresholds,
    classify_tier,
    compute_snapshot,
    is_risk_reducing,
    maintenance_margin,
    unrealized_pnl,
    validate,
)
from pms.risk import checks as c
from tests.risk.builders import BTC, ETH, INSTRUMENTS, brackets, instrument, order

D = Decimal
BTC_I = INSTRUMENTS[BTC]
TICK = BTC_I.tick_size
MAX_MMR = max(b.maint_margin_ratio for b in BTC_I.brackets)


def scaled(low: int, high: int, places: int) -> st.SearchStrategy[Decimal]:
    """Exact decimals low·10^-places .. high·10^-places (no float round trip)."""
    return st.integers(low, high).map(lambda n: D(n).scaleb(-places))


qtys = scaled(1, 20_000, 3)  # 0.001 .. 20 BTC
prices = scaled(10_000, 2_000_000, 1)  # 1000.0 .. 200000.0
wallets = scaled(-100_000, 5_000_000, 2)
leverages = st.integers(1, 125)
notionals = scaled(0, 15 * 10**10, 2)  # 0 .. 1.5e9


# --- margin math -----------------------------------------------------------------------------


def test_maintenance_margin_is_exactly_continuous_at_every_floor() -> None:
    rows = brackets()
    for below, above in itertools.pairwise(rows):
        floor = above.notional_floor
        assert floor * below.maint_margin_ratio - below.cum == maintenance_margin(floor, BTC_I)


@given(notionals, scaled(1, 100_000, 2))
def test_maintenance_margin_is_continuous_and_monotone(value: Decimal, step: Decimal) -> None:
    low = maintenance_margin(value, BTC_I)
    high = maintenance_margin(value + step, BTC_I)
    assert D(0) <= high - low <= step * MAX_MMR


@given(st.integers(-(10**6), 10**6).map(lambda n: D(n).scaleb(-3)), prices, prices)
def test_upnl_is_antisymmetric(qty: Decimal, entry: Decimal, mark: Decimal) -> None:
    assert unrealized_pnl(qty, entry, mark) == -unrealized_pnl(-qty, entry, mark)
    assert unrealized_pnl(qty, entry, mark) == -unrealized_pnl(qty, mark, entry)


def _gap(wallet: Decimal, positions: list[RiskPosition], marks: dict[str, Decimal]) -> Decimal:
    """equity - maintenance margin: > 0 safe, = 0 at liquidation (margin ratio 1), < 0 past it."""
    snap = compute_snapshot(wallet, positions, (), marks, INSTRUMENTS)
    return snap.equity - snap.maintenance_margin


def _assert_liquidates_at(
    wallet: Decimal, positions: list[RiskPosition], marks: dict[str, Decimal], symbol: str
) -> None:
    snap = compute_snapshot(wallet, positions, (), marks, INSTRUMENTS)
    row = snap.position(symbol)
    assert row is not None
    lp = row.liq_price
    long = row.qty > 0
    if lp is None:
        if long:  # a long with no LP survives any fall down to one tick
            assert _gap(wallet, positions, {**marks, symbol: TICK}) > 0
        else:  # a short with no LP is past maintenance at every price
            assert _gap(wallet, positions, {**marks, symbol: TICK}) < 0
        return
    assert lp > 0
    at = _gap(wallet, positions, {**marks, symbol: lp})
    assert abs(at) <= D("1e-12") * max(D(1), row.notional)  # ratio 1, up to rounding
    safer = _gap(wallet, positions, {**marks, symbol: lp + TICK if long else lp - TICK})
    worse_price = lp - TICK if long else lp + TICK
    assert safer > 0
    if worse_price > 0:
        assert _gap(wallet, positions, {**marks, symbol: worse_price}) < 0


@given(st.booleans(), qtys, prices, prices, wallets, leverages)
@settings(max_examples=300)
def test_single_position_liquidates_exactly_at_its_liquidation_price(
    long: bool, qty: Decimal, entry: Decimal, mark: Decimal, wallet: Decimal, leverage: int
) -> None:
    position = RiskPosition(BTC, qty if long else -qty, entry, leverage)
    _assert_liquidates_at(wallet, [position], {BTC: mark}, BTC)


@given(
    st.booleans(),
    qtys,
    prices,
    prices,
    st.booleans(),
    scaled(1, 500_000, 3),
    scaled(1_000, 100_000, 1),
    scaled(1_000, 100_000, 1),
    wallets,
)
@settings(max_examples=300)
def test_multi_position_liquidation_price_holds_the_others_at_mark(
    long: bool,
    qty: Decimal,
    entry: Decimal,
    mark: Decimal,
    eth_long: bool,
    eth_qty: Decimal,
    eth_entry: Decimal,
    eth_mark: Decimal,
    wallet: Decimal,
) -> None:
    positions = [
        RiskPosition(BTC, qty if long else -qty, entry, 10),
        RiskPosition(ETH, eth_qty if eth_long else -eth_qty, eth_entry, 10),
    ]
    marks = {BTC: mark, ETH: eth_mark}
    _assert_liquidates_at(wallet, positions, marks, BTC)
    _assert_liquidates_at(wallet, positions, marks, ETH)


# --- checks ---------------------------------------------------------------------------------

statuses = st.sampled_from(list(AccountStatus))
tiers = st.sampled_from(list(Tier))
sides = st.sampled_from(list(Side))
odd_decimals = st.one_of(
    scaled(-(10**8), 10**8, 4),
    st.sampled_from(
        [D(0), D("1e-18"), D("1e15"), D("-1e15"), D("0.0015"), D("NaN"), D("-Infinity")]
    ),
)


@st.composite
def contexts(draw: st.DrawFn) -> RiskContext:
    symbols = [BTC, ETH]
    marks = {s: draw(prices) for s in symbols if draw(st.integers(0, 9))}  # sometimes missing
    positions = {}
    for symbol in symbols:
        if draw(st.booleans()):
            qty = draw(qtys) * draw(st.sampled_from([1, -1, 0]))
            positions[symbol] = RiskPosition(symbol, qty, draw(prices), draw(leverages))
    open_orders = draw(
        st.lists(
            st.builds(
                order,
                st.sampled_from(symbols),
                sides,
                st.sampled_from(["0.001", "0.5", "3"]),
                st.one_of(st.none(), st.sampled_from(["1000", "60000", "3000.5"])),
                leverages,
                st.booleans(),
            ),
            max_size=4,
        )
    )
    instruments = dict(INSTRUMENTS)
    if draw(st.booleans()):
        instruments["HALT/USDT:USDT"] = instrument("HALT/USDT:USDT", trading=False)
    rules = RiskRules(
        max_leverage=draw(leverages),
        max_notional_per_symbol=draw(st.one_of(st.none(), scaled(0, 10**9, 2))),
        max_exposure_multiple=draw(st.one_of(st.none(), scaled(0, 100, 1))),
        price_band_bps=draw(st.integers(0, 10_000)),
        max_orders_per_window=draw(st.integers(0, 50)),
    )
    return RiskContext(
        status=draw(statuses),
        wallet=draw(wallets),
        rules=rules,
        positions=positions,
        marks=marks,
        instruments=instruments,
        open_orders=tuple(open_orders),
        recent_order_count=draw(st.integers(0, 60)),
        tier=draw(tiers),
    )


intents = st.builds(
    OrderIntent,
    symbol=st.sampled_from([BTC, ETH, "HALT/USDT:USDT", "NOPE/USDT:USDT"]),
    side=sides,
    qty=odd_decimals,
    order_type=st.sampled_from(list(OrderType)),
    price=st.one_of(st.none(), odd_decimals),
    reduce_only=st.booleans(),
    post_only=st.booleans(),
    time_in_force=st.one_of(st.none(), st.sampled_from(list(TimeInForce))),
    leverage=st.one_of(st.none(), st.integers(-5, 200)),
)


@given(intents, contexts())
@settings(max_examples=400)
def test_validate_never_raises_and_speaks_only_known_codes(
    intent: OrderIntent, context: RiskContext
) -> None:
    decision = validate(intent, context)
    assert isinstance(decision, Decision)
    assert all(reason.code in ERROR_CODES for reason in decision.reasons)
    assert decision.accepted == (decision.primary is None)
    assert len(decision.reasons) <= len(CHECKS)


@given(contexts(), st.integers(1, 1000), st.integers(1, 1000), st.sampled_from([BTC, ETH]))
@settings(max_examples=300)
def test_a_risk_reducing_order_is_never_denied_for_margin_leverage_or_exposure(
    context: RiskContext, numerator: int, denominator: int, symbol: str
) -> None:
    held = context.position_qty(symbol)
    if held == 0:
        return
    side = Side.SELL if held > 0 else Side.BUY
    # What the orders already working on that side leave of the position.
    working = context.working_qty(symbol, side)
    room = abs(held) - working
    if room < D("0.001"):
        return
    fraction = D(min(numerator, denominator)) / D(max(numerator, denominator))
    qty = max((room * fraction).quantize(D("0.001"), rounding="ROUND_DOWN"), D("0.001"))
    reducing = OrderIntent(symbol, side, qty, OrderType.MARKET)
    assert is_risk_reducing(reducing, held, working)

    assert c.check_margin(reducing, context) is None
    codes = {r.code for r in validate(reducing, context).reasons}
    assert not codes & {"INSUFFICIENT_MARGIN", "LEVERAGE_TOO_HIGH", "EXPOSURE_LIMIT"}
    assert "ACCOUNT_RESTRICTED" not in codes


# --- tiers ------------------------------------------------------------------------------------


@st.composite
def thresholds(draw: st.DrawFn) -> TierThresholds:
    if draw(st.booleans()):
        return DEFAULT_THRESHOLDS
    gaps = draw(st.lists(st.integers(0, 300), min_size=5, max_size=5))
    values, level = [], 0
    for gap in gaps:
        level += gap + (1 if not values else 0)
        values.append(D(level).scaleb(-3))
    # The band stays below the warning threshold (TierThresholds refuses one that does not).
    first = int(values[0].scaleb(3))
    return TierThresholds(*values, hysteresis=draw(scaled(0, min(100, first - 1), 3)))


@given(thresholds(), tiers, scaled(0, 1500, 3), st.integers(0, 10_000), st.integers(4, 30))
def test_a_ratio_oscillating_within_the_band_never_flaps(
    limits: TierThresholds, start: Tier, low: Decimal, spread: int, steps: int
) -> None:
    band = limits.hysteresis
    high = low + band * D(spread) / D(10_001)  # strictly less than one band apart
    tier = start
    seen = []
    for i in range(steps):
        tier = classify_tier(tier, high if i % 2 else low, limits)
        seen.append(tier)
    # After both values have been seen once the tier is settled for good.
    assert len(set(seen[1:])) == 1


@given(thresholds(), tiers, scaled(0, 1500, 3))
def test_escalation_is_immediate(limits: TierThresholds, start: Tier, ratio: Decimal) -> None:
    raw = classify_tier(Tier.NORMAL, ratio, limits)
    assert classify_tier(start, ratio, limits).severity >= raw.severity
