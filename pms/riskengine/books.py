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
from pms.execution.context import OPEN_STATUSES, open_orders_of, open_positions_of, rules_view
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
    return load_books(session, [sub_account_id]).get(sub_account_id)


def active_account_ids(session: Session) -> list[int]:
    """Sub-accounts (not the house) that hold a position or have a working order."""
    with_positions = select(Position.sub_account_id).where(Position.closed_at.is_(None))
    with_orders = select(Order.sub_account_id).where(Order.status.in_(OPEN_STATUSES))
    query = select(SubAccount.id).where(
        ~SubAccount.is_house, or_(SubAccount.id.in_(with_positions), SubAccount.id.in_(with_orders))
    )
    return list(session.execute(query.order_by(SubAccount.id)).scalars())


_CHUNK = 1000  # ids per round of queries


def load_books(session: Session, ids: Iterable[int]) -> dict[int, AccountBook]:
    """The books of these sub-accounts (the house and unknown ids are left out), three
    queries per :data:`_CHUNK` ids whatever their number: accounts with rules, open
    positions, open orders."""
    wanted = sorted(set(ids))
    books: dict[int, AccountBook] = {}
    for start in range(0, len(wanted), _CHUNK):
        chunk = wanted[start : start + _CHUNK]
        rows = session.execute(
            select(SubAccount, RiskRules)
            .join(RiskRules, RiskRules.sub_account_id == SubAccount.id)
            .where(SubAccount.id.in_(chunk), ~SubAccount.is_house)
        )
        for account, rules in rows:
            books[account.id] = AccountBook(
                sub_account_id=account.id,
                wallet=account.wallet_balance,
                status=AccountStatus(account.status),
                tier=Tier(account.tier),
                mode=LiquidationMode(rules.liquidation_mode),
                thresholds=rules_view(rules).thresholds,
            )
        found = [i for i in chunk if i in books]
        if not found:
            continue
        for sub_account_id, positions in open_positions_of(session, found).items():
            books[sub_account_id].positions = positions
        for sub_account_id, orders in open_orders_of(session, found).items():
            books[sub_account_id].orders = orders
    return books
