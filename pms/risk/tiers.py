"""Risk tiers by margin ratio, with hysteresis so a ratio hovering at a threshold doesn't flap.

Escalation is immediate: the ratio reaching a tier's threshold puts the account in that tier
(or a worse one) at once. De-escalation is damped: an account leaves a tier only when the
ratio falls below that tier's threshold minus the hysteresis band. Each flap would otherwise
emit a ``margin_call`` event, toggle order restrictions or re-arm an ADL cut.
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass
from decimal import Decimal

from pms.domain.enums import Tier
from pms.domain.numbers import ZERO

_ORDERED = (Tier.WARNING, Tier.RESTRICTED, Tier.ADL1, Tier.ADL2, Tier.LIQUIDATION)


@dataclass(frozen=True, slots=True)
class TierThresholds:
    """Margin-ratio thresholds (per-account overrides of SPEC §5's defaults) and the band."""

    warning: Decimal = Decimal("0.70")
    restricted: Decimal = Decimal("0.80")
    adl1: Decimal = Decimal("0.90")
    adl2: Decimal = Decimal("0.95")
    liquidation: Decimal = Decimal("1.00")
    hysteresis: Decimal = Decimal("0.02")

    def __post_init__(self) -> None:
        values = (self.warning, self.restricted, self.adl1, self.adl2, self.liquidation)
        if not values[0] > ZERO or any(a > b for a, b in itertools.pairwise(values)):
            raise ValueError(
                "tier thresholds must be positive and ordered warning <= restricted <= adl1"
                " <= adl2 <= liquidation"
            )
        if self.hysteresis < ZERO:
            raise ValueError("hysteresis band must not be negative")
        if not self.warning > self.hysteresis:
            # A tier is kept while ratio >= threshold - band: at or below the band, even a
            # flat account (ratio 0) could never leave it.
            raise ValueError(
                f"the warning ratio must be above the hysteresis band ({self.hysteresis}):"
                " an account could never leave a tier whose threshold is within it"
            )

    def threshold(self, tier: Tier) -> Decimal | None:
        """The ratio at which ``tier`` starts; None for NORMAL (it has no floor)."""
        return {
            Tier.NORMAL: None,
            Tier.WARNING: self.warning,
            Tier.RESTRICTED: self.restricted,
            Tier.ADL1: self.adl1,
            Tier.ADL2: self.adl2,
            Tier.LIQUIDATION: self.liquidation,
        }[tier]

    def _pairs(self) -> tuple[tuple[Tier, Decimal], ...]:
        return (
            (Tier.WARNING, self.warning),
            (Tier.RESTRICTED, self.restricted),
            (Tier.ADL1, self.adl1),
            (Tier.ADL2, self.adl2),
            (Tier.LIQUIDATION, self.liquidation),
        )


DEFAULT_THRESHOLDS = TierThresholds()


def tier_for_ratio(ratio: Decimal, thresholds: TierThresholds = DEFAULT_THRESHOLDS) -> Tier:
    """The tier of ``ratio`` with no history: the worst tier whose threshold it reaches."""
    result = Tier.NORMAL
    for tier, threshold in thresholds._pairs():
        if ratio >= threshold:
            result = tier
    return result


def classify_tier(
    previous: Tier, ratio: Decimal, thresholds: TierThresholds = DEFAULT_THRESHOLDS
) -> Tier:
    """The tier after observing ``ratio`` when the account was in ``previous``.

    Result = the worse of

    * the raw tier of ``ratio`` (escalation is immediate), and
    * the worst tier ``t`` no worse than ``previous`` with ``ratio >= threshold(t) - band``
      (the account holds on to a tier, or the nearest tier below it, while the ratio stays
      inside that tier's band).

    Dropping several tiers at once is allowed when the ratio falls far enough: from ADL2 a
    ratio of 0.50 lands in NORMAL directly.
    """
    raw = tier_for_ratio(ratio, thresholds)
    if raw.severity >= previous.severity:
        return raw
    band = thresholds.hysteresis
    held = Tier.NORMAL
    for tier, threshold in thresholds._pairs():
        if tier.severity > previous.severity:
            break
        if ratio >= threshold - band:
            held = tier
    return held if held.severity > raw.severity else raw
