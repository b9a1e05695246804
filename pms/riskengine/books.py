"""What the risk pass needs of each sub-account, loaded from Postgres: wallet, positions,
open orders, rules, status and tier. Kept in memory by the monitor, reloaded on change."""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from decimal import Decimal
from typing import TYPE_CHECKING, Any

from sqlalchemy import Connection, or_, select
from sqlalchemy.orm import Session

from pms.db import prepared
from pms.db.models import Order, Position, SubAccount
from pms.domain.enums import AccountStatus, LiquidationMode, Tier
from pms.execution.context import (
    OPEN_STATUSES,
    OPEN_STATUSES_SQL,
    open_orders_from_json,
    positions_from_json,
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


_CHUNK = 1000  # ids per statement
# Everything a book holds, for many sub-accounts, in one statement: one snapshot (positions
# and orders read at the same moment as the wallet) and one round trip. A reload runs after
# every booking. Numbers travel as text inside the JSON arrays so they come back exact; the
# working orders' filter is the partial index's own predicate (OPEN_STATUSES_SQL).
_BOOKS = prepared.register(
    "pms_risk_books",
    f"""
SELECT s.id, s.wallet_balance, s.status, s.tier, r.liquidation_mode, r.warning_ratio,
  r.restricted_ratio, r.adl1_ratio, r.adl2_ratio, r.liquidation_ratio,
  (SELECT json_agg(json_build_array(symbol, qty::text, entry_price::text, leverage) ORDER BY id)
    FROM positions WHERE sub_account_id = s.id AND closed_at IS NULL) AS positions,
  (SELECT json_agg(json_build_array(symbol, side, qty::text, filled_qty::text, price::text,
      leverage, reduce_only) ORDER BY id)
    FROM orders WHERE sub_account_id = s.id AND status IN ({OPEN_STATUSES_SQL})) AS open_orders
FROM sub_accounts s JOIN risk_rules r ON r.sub_account_id = s.id
WHERE s.id = ANY(%(ids)s) AND NOT s.is_house
""",  # noqa: S608 (the statuses are the enum's own values, no input)
    {"ids": "bigint[]"},
)


def load_books(session: Session, ids: Iterable[int]) -> dict[int, AccountBook]:
    """The books of these sub-accounts (the house and unknown ids are left out), read in the
    session's transaction: one statement per :data:`_CHUNK` ids."""
    return _books(ids, lambda chunk: _BOOKS.execute(session.connection(), {"ids": chunk}).all())


def load_books_now(connection: Connection, ids: Iterable[int]) -> dict[int, AccountBook]:
    """:func:`load_books` on a connection outside any transaction: one round trip per
    :data:`_CHUNK` ids, no ``BEGIN`` or ``COMMIT`` (the risk monitor's reloads)."""
    return _books(ids, lambda chunk: _BOOKS.rows_outside_transaction(connection, {"ids": chunk}))


def _books(
    ids: Iterable[int], rows_of: Callable[[list[int]], Sequence[Sequence[Any]]]
) -> dict[int, AccountBook]:
    wanted = sorted(set(ids))
    books: dict[int, AccountBook] = {}
    for start in range(0, len(wanted), _CHUNK):
        for row in rows_of(wanted[start : start + _CHUNK]):
            books[row[0]] = AccountBook(
                sub_account_id=row[0],
                wallet=row[1],
                status=AccountStatus(row[2]),
                tier=Tier(row[3]),
                mode=LiquidationMode(row[4]),
                thresholds=TierThresholds(
                    warning=row[5],
                    restricted=row[6],
                    adl1=row[7],
                    adl2=row[8],
                    liquidation=row[9],
                ),
                positions=positions_from_json(row[10]),
                orders=open_orders_from_json(row[11]),
            )
    return books
