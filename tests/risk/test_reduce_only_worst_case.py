"""Worst-case post-trade qty ignores same-side reduce-only orders (pms/risk/checks.py
``_worst_qty``), so a plain order that the code itself judges *not* risk-reducing (because a
working take-profit already covers the position) is capped as if the position it will flip
were still there to absorb it.

Fixtures: BTC mark 60000, brackets 125x below 50000 notional, 100x from 50000 to 600000.
Sequence that realises the worst case: long 1; TP reduce-only SELL 1 @61000 fills first (the
position is flat, the TP is done), then the plain SELL 1 @62000 fills: short 1, notional 62000.
docs/risk.md: "against a long of 1, a first SELL 1 reduces, a second one is a potential short
of 1 and is judged as such (status, leverage, margin, exposure)".
"""

from __future__ import annotations

from decimal import Decimal

from pms.domain.enums import Side
from pms.risk import checks as c
from pms.risk.context import is_risk_reducing
from tests.risk.builders import BTC, context, intent, order, pos

D = Decimal


def _ctx(**rules: object):
    return context(
        wallet="1000000",
        positions=[pos(BTC, "1", "60000", leverage=20)],
        open_orders=[order(BTC, Side.SELL, "1", "61000", leverage=20, reduce_only=True)],
        **rules,
    )


def test_plain_sell_behind_a_take_profit_is_not_reducing_but_escapes_the_symbol_cap() -> None:
    """Cap 100000 per symbol; the long 1 (60000) is within it. Worst case of the sell side:
    TP 1 fills (flat), then SELL 2 @62000 fills: short 2 → 2 · 62000 = 124000 > 100000 →
    EXPOSURE_LIMIT expected. Current code: _worst_qty = |1 − 0 (non-RO working) − 2| = 1 →
    62000 ≤ 100000 → passes."""
    ctx = _ctx(max_notional_per_symbol=D(100000))
    sell = intent(Side.SELL, "2", price="62000")
    # The code itself says this order is not risk-reducing (working 1 + 1 > |1|):
    assert not is_risk_reducing(sell, D(1), ctx.working_qty(BTC, Side.SELL))
    assert c.check_margin(sell, ctx) is None  # margin is not the issue

    reason = c.check_symbol_exposure(sell, ctx)

    assert reason is not None and reason.code == "EXPOSURE_LIMIT"


def test_plain_sell_behind_a_take_profit_is_leveraged_at_the_empty_bracket() -> None:
    """Rules allow 125x. The potential short 1 @62000 has notional 62000 ≥ 50000 → bracket 2,
    max 100x, so leverage 125 must be LEVERAGE_TOO_HIGH. Current code prices the bracket at
    notional |1 − 0 − 1| · 62000 = 0 → bracket 1 (125x) → passes."""
    ctx = _ctx(max_leverage=125)
    sell = intent(Side.SELL, "1", price="62000", leverage=125)

    reason = c.check_leverage(sell, ctx)

    assert reason is not None and reason.code == "LEVERAGE_TOO_HIGH"


def test_plain_sell_behind_a_take_profit_escapes_the_total_exposure_cap() -> None:
    """Wallet 10000, exposure multiple 10 → cap 100000 (uPnL 0: mark = entry); the long 1
    (60000) is within it. Worst case of BTC: TP fills, then SELL 2 @62000: short 2 = 124000 >
    100000 → EXPOSURE_LIMIT expected. Current code counts BTC at |1 − 0 − 2| · 62000 = 62000
    → passes. (Margin passes too: position IM 60000/20 = 3000 + excess ½ · 2·62000/20 = 3100
    → 6100 ≤ 10000; the short 2 alone needs 6200.)"""
    ctx = context(
        wallet="10000",
        positions=[pos(BTC, "1", "60000", leverage=20)],
        open_orders=[order(BTC, Side.SELL, "1", "61000", leverage=20, reduce_only=True)],
        max_exposure_multiple=D(10),
    )
    sell = intent(Side.SELL, "2", price="62000")
    assert c.check_margin(sell, ctx) is None

    reason = c.check_total_exposure(sell, ctx)

    assert reason is not None and reason.code == "EXPOSURE_LIMIT"
