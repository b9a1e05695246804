"""Sub-account use cases: create, deposit, withdraw, read. Each runs inside the caller's unit of
work (one transaction) and never commits itself."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from decimal import Decimal

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from pms.accounts.ledger import lock_account, post_entry
from pms.commands.schemas import valid_text_id
from pms.db.models import LedgerEntry, Order, Position, RiskRules, SubAccount
from pms.domain.enums import AccountStatus, LedgerKind, OrderStatus
from pms.domain.numbers import ZERO, to_wire
from pms.errors import AccountFrozen, Forbidden, InsufficientMargin, NotFound, ValidationError

MAX_NAME = 100


@dataclass(frozen=True, slots=True)
class AccountView:
    id: int
    name: str
    owner_user_id: str
    status: str
    tier: str
    is_house: bool
    wallet_balance: Decimal
    created_at: datetime

    @classmethod
    def of(cls, account: SubAccount) -> AccountView:
        return cls(
            id=account.id,
            name=account.name,
            owner_user_id=account.owner_user_id,
            status=account.status,
            tier=account.tier,
            is_house=account.is_house,
            wallet_balance=account.wallet_balance,
            created_at=account.created_at,
        )


def _positive(amount: Decimal, what: str) -> Decimal:
    if amount <= 0:
        raise ValidationError(f"{what} amount must be positive, got {amount}")
    return amount


def create_sub_account(
    session: Session, user_id: str, name: str, *, request_id: str | None = None
) -> SubAccount:
    name = name.strip()
    if not valid_text_id(user_id):
        # The gateway's rule for a userId: an owner it could not name could never trade.
        raise ValidationError("userId must be 1 to 64 printable ASCII characters, no spaces")
    if not name or len(name) > MAX_NAME:
        raise ValidationError(f"name must be 1 to {MAX_NAME} characters")
    if user_id == "house":
        raise Forbidden("the user id 'house' is reserved for the house account")
    account = SubAccount(name=name, owner_user_id=user_id, request_id=request_id)
    session.add(account)
    session.flush()
    session.add(RiskRules(sub_account_id=account.id))
    session.flush()
    session.refresh(account)
    return account


def get_account(session: Session, sub_account_id: int) -> SubAccount:
    account = session.get(SubAccount, sub_account_id)
    if account is None:
        raise NotFound(
            f"sub-account {sub_account_id} does not exist", {"subAccountId": sub_account_id}
        )
    return account


def house_account(session: Session) -> SubAccount:
    return session.execute(select(SubAccount).where(SubAccount.is_house)).scalar_one()


def list_accounts(session: Session, user_id: str | None = None) -> list[SubAccount]:
    query = select(SubAccount).order_by(SubAccount.id)
    if user_id is not None:
        query = query.where(SubAccount.owner_user_id == user_id)
    return list(session.execute(query).scalars())


def deposit(
    session: Session, sub_account_id: int, amount: Decimal, *, request_id: str | None = None
) -> LedgerEntry:
    _positive(amount, "deposit")
    account = lock_account(session, sub_account_id)
    if account.status == AccountStatus.CLOSED:
        raise AccountFrozen(f"sub-account {sub_account_id} is closed")
    return post_entry(
        session,
        account,
        LedgerKind.DEPOSIT,
        amount,
        ref_type="request" if request_id else None,
        ref_id=request_id,
    )


def margin_in_use(session: Session, sub_account_id: int) -> Decimal:
    """Initial margin held by open positions (at entry) and open orders (at their price).

    The withdrawal guard: money backing a position or a resting order cannot leave. A market
    order still in flight has no price here: :func:`withdraw` refuses to guess it.
    """
    total = ZERO
    positions = session.execute(
        select(Position.qty, Position.entry_price, Position.leverage).where(
            Position.sub_account_id == sub_account_id, Position.closed_at.is_(None)
        )
    )
    for qty, entry, leverage in positions:
        total += abs(qty) * entry / leverage
    orders = session.execute(
        select(Order.qty, Order.filled_qty, Order.price, Order.leverage, Order.reduce_only).where(
            Order.sub_account_id == sub_account_id,
            Order.status.in_([s.value for s in OrderStatus if s.is_open]),
        )
    )
    for qty, filled, price, leverage, reduce_only in orders:
        if price is not None and not reduce_only:
            total += (qty - filled) * price / leverage
    return total


def withdraw(
    session: Session,
    sub_account_id: int,
    amount: Decimal,
    *,
    request_id: str | None = None,
    marked_available: Decimal | None = None,
) -> LedgerEntry:
    """Withdraw what neither backs positions and working orders nor covers open losses.

    Without prices (the operator CLI) the guard is the wallet minus the margin at entry;
    with ``marked_available`` (equity - initial margin at current marks, from the caller's
    risk snapshot) the smaller of the two applies, so an unrealized loss cannot be withdrawn.
    """
    _positive(amount, "withdrawal")
    account = lock_account(session, sub_account_id)
    if account.status in (AccountStatus.FROZEN, AccountStatus.LIQUIDATING, AccountStatus.CLOSED):
        raise AccountFrozen(
            f"sub-account {sub_account_id} is {account.status}: withdrawals are blocked"
        )
    if marked_available is None:
        # Without prices the margin a market order in flight will hold is unknown (the order
        # passed its pre-trade check against this balance): wait until it is filled.
        in_flight = session.execute(
            select(func.count())
            .select_from(Order)
            .where(
                Order.sub_account_id == sub_account_id,
                Order.price.is_(None),
                ~Order.reduce_only,
                Order.status.in_([s.value for s in OrderStatus if s.is_open]),
            )
        ).scalar_one()
        if in_flight:
            raise InsufficientMargin(
                f"cannot withdraw while {in_flight} market order(s) of sub-account"
                f" {sub_account_id} are being placed: their margin is not known yet; try again"
                " once they are filled",
                {"marketOrdersInFlight": in_flight},
            )
    available = account.wallet_balance - margin_in_use(session, sub_account_id)
    if marked_available is not None:
        available = min(available, marked_available)
    if amount > available:
        raise InsufficientMargin(
            f"cannot withdraw {to_wire(amount)}: only {to_wire(max(available, ZERO))} is available",
            {"requested": to_wire(amount), "available": to_wire(max(available, ZERO))},
        )
    return post_entry(
        session,
        account,
        LedgerKind.WITHDRAWAL,
        -amount,
        ref_type="request" if request_id else None,
        ref_id=request_id,
    )


def ledger(session: Session, sub_account_id: int, limit: int = 50) -> list[LedgerEntry]:
    get_account(session, sub_account_id)
    query = (
        select(LedgerEntry)
        .where(LedgerEntry.sub_account_id == sub_account_id)
        .order_by(LedgerEntry.id.desc())
        .limit(limit)
    )
    return list(session.execute(query).scalars())
