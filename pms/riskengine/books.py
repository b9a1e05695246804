"""What the risk pass needs of each sub-account, loaded from Postgres: wallet, positions,
open orders, rules, status and tier. Kept in memory by the monitor, reloaded on change."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from decimal import Decimal
from typing import TYPE_CHECKING

from sqlalchemy import or_, select
from sqlalchemy.orm import Session

from pms.db.models import Order, Position, RiskRules, SubAccount
from pms.domain.enums import AccountStatus, LiquidationMode, Tier
from pms.execution.context import OPEN_STATUSES, open_orders, open_positions, rules_view
from pms.risk.snapshot import OpenOrder, RiskPosition
from pms.risk.tiers import TierThresholds

if TYPE_CHECKING:
    from pms.riskengine.document import PreparedBook


@dataclass
class AccountBook:
    sub_account_id: int
    wallet: Decimal
    status: AccountStatus
    tier: Tier
    mode: LiquidationMode
    thresholds: TierThresholds
    positions: dict[str, RiskPosition] = field(default_factory=dict)
    orders: list[OpenOrder] = field(default_factory=list)
    # The document parts that do not move with the marks (pms.riskengine.document.prepare
    # fills it and rebuilds it when the wallet, status or positions above change).
    prepared: PreparedBook | None = field(default=None, init=False, repr=False, compare=False)

    @property
    def symbols(self) -> set[str]:
        return set(self.positions) | {o.symbol for o in self.orders}


def load_book(session: Session, sub_account_id: int) -> AccountBook | None:
    account = session.get(SubAccount, sub_account_id)
    if account is None or account.is_house:
        return None  # the house is never margin-called: it is the insurer
    rules = session.get(RiskRules, sub_account_id)
    assert rules is not None
    return AccountBook(
        sub_account_id=account.id,
        wallet=account.wallet_balance,
        status=AccountStatus(account.status),
        tier=Tier(account.tier),
        mode=LiquidationMode(rules.liquidation_mode),
        thresholds=rules_view(rules).thresholds,
        positions=open_positions(session, account.id),
        orders=open_orders(session, account.id),
    )


def active_account_ids(session: Session) -> list[int]:
    """Sub-accounts (not the house) that hold a position or have a working order."""
    with_positions = select(Position.sub_account_id).where(Position.closed_at.is_(None))
    with_orders = select(Order.sub_account_id).where(Order.status.in_(OPEN_STATUSES))
    query = select(SubAccount.id).where(
        ~SubAccount.is_house, or_(SubAccount.id.in_(with_positions), SubAccount.id.in_(with_orders))
    )
    return list(session.execute(query.order_by(SubAccount.id)).scalars())


def load_books(session: Session, ids: Iterable[int]) -> dict[int, AccountBook]:
    books = {}
    for sub_account_id in ids:
        book = load_book(session, sub_account_id)
        if book is not None:
            books[sub_account_id] = book
    return books
