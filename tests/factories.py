"""Small builders for domain objects used across test suites."""

from __future__ import annotations

import uuid
from decimal import Decimal

from sqlalchemy.orm import Session, sessionmaker

from pms.accounts import service
from pms.db.session import unit_of_work


def new_user() -> str:
    return f"user-{uuid.uuid4().hex[:8]}"


def funded_account(
    factory: sessionmaker[Session], amount: str = "1000", user: str | None = None
) -> tuple[int, str]:
    """Create a sub-account for a fresh user, deposit ``amount``; return (id, user)."""
    user = user or new_user()
    with unit_of_work(factory) as session:
        account = service.create_sub_account(session, user, "test")
        if Decimal(amount) > 0:
            service.deposit(session, account.id, Decimal(amount))
        return account.id, user
