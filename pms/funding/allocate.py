"""Who pays what at one funding: pure arithmetic, no I/O.

At a funding time the exchange charges the master account ``-Q · mark · rate`` for its net
position ``Q`` in the symbol (a positive rate: longs pay shorts). The sub-accounts' positions
sum to ``Q`` (the house's included), so each pays or receives ``-q · mark · rate`` on its own
position ``q``, to 8 decimals like the exchange's own amounts. Whatever the entries do not
sum to of what the exchange actually paid or charged (rounding, or a position the books and
the exchange disagree on: position-sync reports those) is the house's residual, so that the
sub-accounts' wallets together move exactly as the master account's did.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from decimal import Decimal

from pms.domain.numbers import money

ZERO = Decimal(0)


def funding_fee(qty: Decimal, mark: Decimal, rate: Decimal) -> Decimal:
    """What a position of ``qty`` (signed: + long) receives (+) or pays (-) at one funding."""
    return money(-qty * mark * rate, 8)


@dataclass(frozen=True, slots=True)
class Allocation:
    fees: dict[int, Decimal]  # sub-account id → its FUNDING entry (no zero entries)
    allocated: Decimal  # their sum
    residual: Decimal  # the house's: what the exchange moved minus ``allocated``


def allocate(
    holdings: Mapping[int, Decimal], mark: Decimal, rate: Decimal, exchange_amount: Decimal
) -> Allocation:
    """Each holder's fee on its position at the funding time, and the house's residual."""
    fees = {}
    for sub_account_id, qty in sorted(holdings.items()):
        fee = funding_fee(qty, mark, rate)
        if fee != 0:
            fees[sub_account_id] = fee
    allocated = sum(fees.values(), start=ZERO)
    return Allocation(fees=fees, allocated=allocated, residual=exchange_amount - allocated)


def implied_mark(exchange_amount: Decimal, net_qty: Decimal, rate: Decimal) -> Decimal | None:
    """The mark the exchange settled at, worked back from what it charged the master account
    (for funding records that carry no mark price); None when it cannot be told."""
    if net_qty == 0 or rate == 0 or exchange_amount == 0:
        return None
    mark = -exchange_amount / (net_qty * rate)
    return mark if mark > 0 else None
