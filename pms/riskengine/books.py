"""What the risk pass needs of each sub-account, loaded from Postgres: wallet, positions,
open orders, rules, status and tier. Kept in memory by the monitor, reloaded on change."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from decimal import Decimal
from typing import TYPE_CHECKING

from sqlalchemy import any_, or_, select
from sqlalchemy.orm import Session

from pms.db.models import Order, Position, RiskRules, SubAccount
from pms.db.params import bigint_array
from pms.domain.enums import AccountStatus, LiquidationMode, Tier
from pms.execution.context import (
    OPEN_STATUSES,
    open_orders_of,
    open_positions_of,
    thresholds_of,
)
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
# Columns, not entities, run through Core: a reload runs after every booking, and the ORM's
# per-row and per-statement work was most of its cost. The ids go as one array parameter.
_ACCOUNTS_WITH_RULES = (
    select(
        SubAccount.id,
        SubAccount.wallet_balance,
        SubAccount.status,
        SubAccount.tier,
        RiskRules.liquidation_mode,
        RiskRules.warning_ratio,
        RiskRules.restricted_ratio,
        RiskRules.adl1_ratio,
        RiskRules.adl2_ratio,
        RiskRules.liquidation_ratio,
    )
    .join(RiskRules, RiskRules.sub_account_id == SubAccount.id)
    .where(SubAccount.id == any_(bigint_array("ids")), ~SubAccount.is_house)
)


def load_books(session: Session, ids: Iterable[int]) -> dict[int, AccountBook]:
    """The books of these sub-accounts (the house and unknown ids are left out), three
    queries per :data:`_CHUNK` ids whatever their number: accounts with rules, open
    positions, open orders."""
    wanted = sorted(set(ids))
    books: dict[int, AccountBook] = {}
    for start in range(0, len(wanted), _CHUNK):
        chunk = wanted[start : start + _CHUNK]
        for row in session.connection().execute(_ACCOUNTS_WITH_RULES, {"ids": chunk}):
            books[row.id] = AccountBook(
                sub_account_id=row.id,
                wallet=row.wallet_balance,
                status=AccountStatus(row.status),
                tier=Tier(row.tier),
                mode=LiquidationMode(row.liquidation_mode),
                thresholds=thresholds_of(row),
            )
        found = [i for i in chunk if i in books]
        if not found:
            continue
        for sub_account_id, positions in open_positions_of(session, found).items():
            books[sub_account_id].positions = positions
        for sub_account_id, orders in open_orders_of(session, found).items():
            books[sub_account_id].orders = orders
    return books
