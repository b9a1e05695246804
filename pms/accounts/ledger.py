"""The ledger: the only code that changes a wallet balance.

Every change is an entry carrying the resulting balance, so balance = sum of entries holds by
construction. The caller must hold the sub-account's row lock (``lock_account``) for the whole
unit of work; that lock is what keeps concurrent deposits, withdrawals and bookings exact
across threads and processes.
"""

from __future__ import annotations

from decimal import Decimal
from typing import Protocol

from sqlalchemy import bindparam, func, select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from pms.db.models import LedgerEntry, SubAccount
from pms.domain.enums import LedgerKind
from pms.errors import NotFound, ValidationError

# Built once (construction and cache key are per statement object; this is the hot path).
_LOCK_ACCOUNT = (
    select(SubAccount)
    .where(SubAccount.id == bindparam("id"))
    .with_for_update()
    .execution_options(populate_existing=True)
)


class AccountRow(Protocol):
    """What an order's checks read of its sub-account: a :class:`SubAccount` or the columns
    :func:`pms.execution.context.lock_and_read_order_context` returns."""

    @property
    def id(self) -> int: ...
    @property
    def owner_user_id(self) -> str: ...
    @property
    def is_house(self) -> bool: ...
    @property
    def status(self) -> str: ...
    @property
    def wallet_balance(self) -> Decimal: ...
    @property
    def tier(self) -> str: ...


def account_not_found(sub_account_id: int) -> NotFound:
    return NotFound(
        f"sub-account {sub_account_id} does not exist", {"subAccountId": sub_account_id}
    )


def lock_account(session: Session, sub_account_id: int) -> SubAccount:
    """Load the sub-account with ``SELECT ... FOR UPDATE``; NotFound if there is none."""
    # populate_existing: a copy already in the session is overwritten with the row as locked
    # (one statement, where a separate refresh would be a second SELECT).
    account = session.execute(_LOCK_ACCOUNT, {"id": sub_account_id}).scalar_one_or_none()
    if account is None:
        raise account_not_found(sub_account_id)
    return account


def post_entry(
    session: Session,
    account: SubAccount,
    kind: LedgerKind,
    amount: Decimal,
    *,
    ref_type: str | None = None,
    ref_id: str | None = None,
    note: str | None = None,
    allow_negative: bool = False,
) -> LedgerEntry:
    """Append an entry and move the balance by ``amount`` (signed).

    Refuses an entry that lowers a non-house balance below zero unless ``allow_negative``
    (the flag exists for the house). A credit is always taken: a sub-account's wallet may
    already be below zero, from a fill's loss while it holds positions (pms.execution.booking),
    and a deposit then reduces what it owes.
    """
    if amount == 0:
        raise ValidationError("a ledger entry cannot be zero")
    new_balance = account.wallet_balance + amount
    if amount < 0 and new_balance < 0 and not (account.is_house or allow_negative):
        raise ValidationError(
            f"entry of {amount} would take sub-account {account.id} below zero",
            {"balance": str(account.wallet_balance), "amount": str(amount)},
        )
    entry = LedgerEntry(
        sub_account_id=account.id,
        kind=kind.value,
        amount=amount,
        balance_after=new_balance,
        ref_type=ref_type,
        ref_id=ref_id,
        note=note,
    )
    session.add(entry)
    account.wallet_balance = new_balance
    account.updated_at = func.now()
    try:
        session.flush()
    except IntegrityError as exc:
        raise ValidationError(
            f"ledger entry {kind.value} for {ref_type}:{ref_id} already exists",
            {"refType": ref_type, "refId": ref_id},
        ) from exc
    return entry


def ledger_sum(session: Session, sub_account_id: int) -> Decimal:
    total = session.execute(
        select(func.coalesce(func.sum(LedgerEntry.amount), 0)).where(
            LedgerEntry.sub_account_id == sub_account_id
        )
    ).scalar_one()
    return Decimal(total)
