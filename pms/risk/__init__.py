"""Pure risk math and pre-trade checks (no I/O). See docs/risk.md.

Modules: ``margin`` (formulas, bracket tables, liquidation price), ``snapshot`` (one
sub-account's risk at current marks, the risk pass's hot path), ``tiers`` (margin ratio →
tier with hysteresis), ``adl`` (de-risking cut plans), ``context`` (order intent, account
context, reasons and decisions), ``checks`` (one pure function per pre-trade check) and
``validator`` (runs them all).
"""

from pms.risk.adl import AdlCut, AdlPlan, plan_adl
from pms.risk.context import (
    Decision,
    OrderIntent,
    Quote,
    Reason,
    RiskContext,
    RiskRules,
    is_risk_reducing,
)
from pms.risk.margin import (
    RATIO_BEYOND_LIQUIDATION,
    bracket_max_leverage,
    initial_margin,
    liquidation_price,
    maintenance_margin,
    margin_ratio,
    notional,
    unrealized_pnl,
)
from pms.risk.snapshot import (
    OpenOrder,
    PositionRisk,
    RiskPosition,
    RiskSnapshot,
    compute_snapshot,
    open_orders_margin,
    order_margin,
)
from pms.risk.tiers import DEFAULT_THRESHOLDS, TierThresholds, classify_tier, tier_for_ratio
from pms.risk.validator import CHECKS, validate

__all__ = [
    "CHECKS",
    "DEFAULT_THRESHOLDS",
    "RATIO_BEYOND_LIQUIDATION",
    "AdlCut",
    "AdlPlan",
    "Decision",
    "OpenOrder",
    "OrderIntent",
    "PositionRisk",
    "Quote",
    "Reason",
    "RiskContext",
    "RiskPosition",
    "RiskRules",
    "RiskSnapshot",
    "TierThresholds",
    "bracket_max_leverage",
    "classify_tier",
    "compute_snapshot",
    "initial_margin",
    "is_risk_reducing",
    "liquidation_price",
    "maintenance_margin",
    "margin_ratio",
    "notional",
    "open_orders_margin",
    "order_margin",
    "plan_adl",
    "tier_for_ratio",
    "unrealized_pnl",
    "validate",
]
