"""Tier classification with hysteresis."""

from __future__ import annotations

from decimal import Decimal

import pytest

from pms.domain.enums import Tier
from pms.risk import RATIO_BEYOND_LIQUIDATION, TierThresholds, classify_tier, tier_for_ratio

D = Decimal


@pytest.mark.parametrize(
    ("ratio", "tier"),
    [
        ("0", Tier.NORMAL),
        ("0.6999", Tier.NORMAL),
        ("0.70", Tier.WARNING),
        ("0.80", Tier.RESTRICTED),
        ("0.90", Tier.ADL1),
        ("0.95", Tier.ADL2),
        ("1.00", Tier.LIQUIDATION),
        ("7", Tier.LIQUIDATION),
    ],
)
def test_raw_tiers_at_the_default_thresholds(ratio: str, tier: Tier) -> None:
    assert tier_for_ratio(D(ratio)) is tier


def test_escalation_is_immediate_even_across_tiers() -> None:
    assert classify_tier(Tier.NORMAL, D("0.96")) is Tier.ADL2
    assert classify_tier(Tier.WARNING, RATIO_BEYOND_LIQUIDATION) is Tier.LIQUIDATION


@pytest.mark.parametrize(
    ("previous", "ratio", "expected"),
    [
        (Tier.WARNING, "0.69", Tier.WARNING),  # inside the band below 0.70
        (Tier.WARNING, "0.68", Tier.WARNING),  # exactly at threshold - band: still held
        (Tier.WARNING, "0.679", Tier.NORMAL),
        (Tier.ADL2, "0.935", Tier.ADL2),
        (Tier.ADL2, "0.925", Tier.ADL1),
        (Tier.ADL2, "0.885", Tier.ADL1),  # 0.885 >= 0.90 - 0.02: held in ADL1's band
        (Tier.ADL2, "0.50", Tier.NORMAL),  # falls through every band at once
        (Tier.LIQUIDATION, "0.99", Tier.LIQUIDATION),
    ],
)
def test_de_escalation_waits_for_the_band(previous: Tier, ratio: str, expected: Tier) -> None:
    assert classify_tier(previous, D(ratio)) is expected


def test_per_account_overrides() -> None:
    strict = TierThresholds(warning=D("0.5"), restricted=D("0.6"), hysteresis=D("0.05"))
    assert classify_tier(Tier.NORMAL, D("0.55"), strict) is Tier.WARNING
    assert classify_tier(Tier.RESTRICTED, D("0.56"), strict) is Tier.RESTRICTED
    assert classify_tier(Tier.RESTRICTED, D("0.54"), strict) is Tier.WARNING


def test_thresholds_must_be_ordered() -> None:
    with pytest.raises(ValueError, match="ordered"):
        TierThresholds(warning=D("0.9"), restricted=D("0.8"))
    with pytest.raises(ValueError, match="band"):
        TierThresholds(hysteresis=D("-0.01"))
