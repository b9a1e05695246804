"""Runs every pre-trade check in a fixed order and collects the reasons.

The order decides the primary error code a trader sees when several checks fail: the
account's state first (a frozen account is frozen whatever the order looks like), then the
rate limit, the symbol, the order's own shape and filters, and the economics last (they only
mean something for a well-formed order).
"""

from __future__ import annotations

from collections.abc import Callable

from pms.errors import ValidationError
from pms.risk.checks import (
    check_account_status,
    check_leverage,
    check_margin,
    check_market_data,
    check_min_notional,
    check_order_rate,
    check_order_shape,
    check_price_band,
    check_price_filters,
    check_qty_filters,
    check_reduce_only,
    check_symbol,
    check_symbol_exposure,
    check_total_exposure,
)
from pms.risk.context import Decision, OrderIntent, Reason, RiskContext

Check = Callable[[OrderIntent, RiskContext], Reason | None]

CHECKS: tuple[Check, ...] = (
    check_account_status,
    check_order_rate,
    check_symbol,
    check_market_data,
    check_order_shape,
    check_qty_filters,
    check_price_filters,
    check_min_notional,
    check_price_band,
    check_reduce_only,
    check_leverage,
    check_margin,
    check_symbol_exposure,
    check_total_exposure,
)


def validate(
    intent: OrderIntent, context: RiskContext, checks: tuple[Check, ...] = CHECKS
) -> Decision:
    """Accepted (no reasons) or denied with every reason; ``reasons[0]`` is the primary.

    All checks run even after a failure so the trader can fix everything in one go. A NaN
    or infinite qty or price (only possible if the edge's ``parse_decimal`` was bypassed) is
    refused alone: Decimal comparisons on NaN raise, and no other check could judge it.
    """
    numbers = (intent.qty,) if intent.price is None else (intent.qty, intent.price)
    if not all(value.is_finite() for value in numbers):
        return Decision((Reason(ValidationError.code, "qty and price must be finite numbers", {}),))
    reasons = []
    for check in checks:
        reason = check(intent, context)
        if reason is not None:
            reasons.append(reason)
    return Decision(tuple(reasons))
