"""update_risk_rules accepts thresholds the tier machinery cannot leave.

classify_tier keeps an account in a tier while ``ratio >= threshold - hysteresis`` (band
0.02). A threshold at or below the band is therefore reached by every ratio, including 0 (a
flat account): once the account enters that tier it never leaves it (RESTRICTED: it may only
reduce, forever; LIQUIDATION: re-enforced every second, forever), though it holds nothing.
"""

from __future__ import annotations

from decimal import Decimal

from pms.app import App
from pms.commands import schemas as cmd
from pms.db.models import RiskRules
from pms.db.session import unit_of_work
from pms.domain.enums import Tier
from pms.execution.context import thresholds_of
from pms.risk.tiers import classify_tier


def test_accepted_thresholds_let_a_flat_account_return_to_normal(app: App, trader) -> None:
    t = trader("1000")
    updated = t.send(
        "update_risk_rules",
        (cmd.UpdateRiskRules, app.accounts.update_risk_rules),
        role="admin",
        subAccountId=t.sub_account_id,
        warningRatio="0.01",
        restrictedRatio="0.01",
        adl1Ratio="0.015",
        adl2Ratio="0.015",
        liquidationRatio="0.02",
    )
    if not updated["ok"]:
        return  # refused at the edge: fine
    with unit_of_work(app.sessions) as s:
        thresholds = thresholds_of(s.get(RiskRules, t.sub_account_id))
    flat = Decimal(0)  # margin ratio of an account holding nothing (pms.risk.margin)
    for tier in (Tier.RESTRICTED, Tier.LIQUIDATION):
        # classify_tier answered the same tier for a flat account, forever.
        assert classify_tier(tier, flat, thresholds) is Tier.NORMAL, (tier, updated["data"])
