"""ADL cut planning: which positions a de-risking pass cuts, and by how much (pure).

SPEC §5: at ADL1 cut the positions that carry the most maintenance margin by 25%, at ADL2 by
50%, repeating until the projected margin ratio is under the RESTRICTED threshold. The plan
is projected at current marks: a cut at mark realises its uPnL into the wallet, so equity is
unchanged and only maintenance margin falls. Slippage and fees make reality slightly worse;
the next mark tick re-plans from the real state, so the projection need not be exact.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from decimal import Decimal

from pms.domain.enums import Side, Tier
from pms.domain.instrument import Instrument
from pms.domain.numbers import ZERO, quantize_down
from pms.risk.margin import bracket_table, margin_ratio
from pms.risk.snapshot import RiskSnapshot
from pms.risk.tiers import DEFAULT_THRESHOLDS, TierThresholds

CUT_FRACTIONS: Mapping[Tier, Decimal] = {Tier.ADL1: Decimal("0.25"), Tier.ADL2: Decimal("0.5")}


@dataclass(frozen=True, slots=True)
class AdlCut:
    """One reduce-only market order: ``side`` is the order's side (opposite the position)."""

    symbol: str
    side: Side
    qty: Decimal
    closes_position: bool


@dataclass(frozen=True, slots=True)
class AdlPlan:
    tier: Tier
    fraction: Decimal
    cuts: tuple[AdlCut, ...]
    projected_maint_margin: Decimal
    projected_ratio: Decimal


def plan_adl(
    snapshot: RiskSnapshot,
    tier: Tier,
    instruments: Mapping[str, Instrument],
    thresholds: TierThresholds = DEFAULT_THRESHOLDS,
) -> AdlPlan:
    """Cuts that bring the projected margin ratio under ``thresholds.restricted``.

    Each round cuts ``fraction`` of the position with the most maintenance margin *now*
    (recomputed after every cut, ties broken by symbol for a deterministic plan). Quantities
    are rounded down to the market step; a cut below the market minimum is raised to it, and
    a cut that would leave less than the minimum closes the position. Cuts of one symbol are
    merged into one order. Tiers other than ADL1/ADL2 get an empty plan: below ADL1 nothing
    is cut, and LIQUIDATION closes everything through its own path.

    Cuts above the market max qty are the executor's to split into several orders.
    """
    fraction = CUT_FRACTIONS.get(tier)
    equity = snapshot.equity
    total_mm = snapshot.maintenance_margin
    if fraction is None:
        return AdlPlan(tier, ZERO, (), total_mm, margin_ratio(total_mm, equity))

    # symbol → [remaining |qty|, signed direction, mark, current maintenance margin]
    book: dict[str, list[Decimal]] = {
        p.symbol: [abs(p.qty), Decimal(1 if p.qty > 0 else -1), p.mark, p.maint_margin]
        for p in snapshot.positions
        if p.qty
    }
    cut_qty: dict[str, Decimal] = {}
    target = thresholds.restricted
    while book and margin_ratio(total_mm, equity) >= target:
        symbol = max(book, key=lambda s: (book[s][3], s))
        remaining, _direction, mark, mm = book[symbol]
        instrument = instruments[symbol]
        step = instrument.market_step_size
        minimum = max(instrument.market_min_qty, step)
        cut = max(quantize_down(remaining * fraction, step), minimum)
        if remaining - cut < minimum:
            cut = remaining
        left = remaining - cut
        new_mm = bracket_table(instrument).maint_margin(left * mark) if left else ZERO
        total_mm += new_mm - mm
        cut_qty[symbol] = cut_qty.get(symbol, ZERO) + cut
        if left:
            book[symbol][0] = left
            book[symbol][3] = new_mm
        else:
            del book[symbol]

    directions = {p.symbol: p.qty for p in snapshot.positions}
    cuts = tuple(
        AdlCut(
            symbol=symbol,
            side=Side.SELL if directions[symbol] > 0 else Side.BUY,
            qty=qty,
            closes_position=symbol not in book,
        )
        for symbol, qty in cut_qty.items()
    )
    return AdlPlan(tier, fraction, cuts, total_mm, margin_ratio(total_mm, equity))
