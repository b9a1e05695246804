"""Accounts and ledger against the real database."""

import uuid
from decimal import Decimal

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from sqlalchemy import select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session, sessionmaker

from pms.accounts import service
from pms.accounts.ledger import ledger_sum, lock_account, post_entry
from pms.db.models import LedgerEntry, Order, SubAccount
from pms.db.session import unit_of_work
from pms.domain.enums import LedgerKind
from pms.errors import Forbidden, InsufficientMargin, NotFound, ValidationError
from tests.factories import funded_account, new_user


def balance(factory: sessionmaker[Session], account_id: int) -> Decimal:
    with unit_of_work(factory) as s:
        return service.get_account(s, account_id).wallet_balance


def entries(factory: sessionmaker[Session], account_id: int) -> int:
    with unit_of_work(factory) as s:
        return len(service.ledger(s, account_id, 10_000))


def test_create_deposit_withdraw_and_read_back(session_factory: sessionmaker[Session]) -> None:
    user = new_user()
    with unit_of_work(session_factory) as s:
        account = service.create_sub_account(s, user, "alpha")
        account_id = account.id
    with unit_of_work(session_factory) as s:
        assert service.deposit(s, account_id, Decimal("100.25")).balance_after == Decimal("100.25")
    with unit_of_work(session_factory) as s:
        assert service.withdraw(s, account_id, Decimal("0.25")).balance_after == Decimal("100")
    with unit_of_work(session_factory) as s:
        assert [a.id for a in service.list_accounts(s, user)] == [account_id]
        kinds = [e.kind for e in service.ledger(s, account_id)]
        assert kinds == ["WITHDRAWAL", "DEPOSIT"]
        assert (
            ledger_sum(s, account_id)
            == Decimal("100")
            == service.get_account(s, account_id).wallet_balance
        )


def test_overdraft_is_refused_and_changes_nothing(session_factory: sessionmaker[Session]) -> None:
    account_id, _ = funded_account(session_factory, "50")
    with (
        pytest.raises(InsufficientMargin, match="only 50 is available"),
        unit_of_work(session_factory) as s,
    ):
        service.withdraw(s, account_id, Decimal("50.01"))
    assert balance(session_factory, account_id) == Decimal("50")
    assert entries(session_factory, account_id) == 1


@pytest.mark.parametrize("amount", ["0", "-5"])
def test_non_positive_amounts_are_refused(
    session_factory: sessionmaker[Session], amount: str
) -> None:
    account_id, _ = funded_account(session_factory, "10")
    for op in (service.deposit, service.withdraw):
        with pytest.raises(ValidationError), unit_of_work(session_factory) as s:
            op(s, account_id, Decimal(amount))
    assert balance(session_factory, account_id) == Decimal("10")


def test_unknown_account_is_not_found(session_factory: sessionmaker[Session]) -> None:
    with pytest.raises(NotFound), unit_of_work(session_factory) as s:
        service.deposit(s, 987654321, Decimal("1"))


def test_reserved_and_invalid_names(session_factory: sessionmaker[Session]) -> None:
    with pytest.raises(Forbidden), unit_of_work(session_factory) as s:
        service.create_sub_account(s, "house", "mine")
    with pytest.raises(ValidationError), unit_of_work(session_factory) as s:
        service.create_sub_account(s, new_user(), "   ")


def test_deposit_by_request_id_is_posted_once(session_factory: sessionmaker[Session]) -> None:
    account_id, _ = funded_account(session_factory, "0")
    with unit_of_work(session_factory) as s:
        service.deposit(s, account_id, Decimal("5"), request_id="dep-1")
    with pytest.raises(ValidationError, match="already exists"), unit_of_work(session_factory) as s:
        service.deposit(s, account_id, Decimal("5"), request_id="dep-1")
    assert balance(session_factory, account_id) == Decimal("5")


def test_an_entry_may_not_lower_a_sub_account_below_zero_but_a_credit_is_taken(
    session_factory: sessionmaker[Session],
) -> None:
    # Arrange: a wallet below zero, as a fill's loss leaves it while positions stay open.
    account_id, _ = funded_account(session_factory, "1")
    with unit_of_work(session_factory) as s:
        account = lock_account(s, account_id)
        post_entry(s, account, LedgerKind.REALIZED_PNL, Decimal("-5"), allow_negative=True)

    # Act / Assert: a debit is refused, a deposit is taken (it reduces what the account owes).
    with pytest.raises(ValidationError, match="below zero"), unit_of_work(session_factory) as s:
        post_entry(s, lock_account(s, account_id), LedgerKind.FEE, Decimal("-1"))
    with unit_of_work(session_factory) as s:
        service.deposit(s, account_id, Decimal("3"))
    assert balance(session_factory, account_id) == Decimal("-1")
    with unit_of_work(session_factory) as s:
        house = service.house_account(s)
        post_entry(
            s,
            lock_account(s, house.id),
            LedgerKind.INSURANCE,
            Decimal("-3"),
            ref_type="test",
            ref_id=new_user(),
        )
    # the house may go negative: it absorbs liquidation shortfalls


def test_house_account_exists_once(session_factory: sessionmaker[Session]) -> None:
    with unit_of_work(session_factory) as s:
        houses = s.execute(select(SubAccount).where(SubAccount.is_house)).scalars().all()
        assert len(houses) == 1
    with pytest.raises(IntegrityError), unit_of_work(session_factory) as s:
        s.add(SubAccount(name="house2", owner_user_id="x", is_house=True))
        s.flush()


ops = st.lists(
    st.tuples(
        st.sampled_from(["deposit", "withdraw"]),
        st.decimals(min_value=Decimal("-5"), max_value=Decimal("500"), places=6),
    ),
    min_size=1,
    max_size=25,
)


@settings(
    max_examples=30, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(ops)
def test_balance_always_equals_sum_of_entries(
    session_factory: sessionmaker[Session], sequence: list[tuple[str, Decimal]]
) -> None:
    account_id, _ = funded_account(session_factory, "0")
    expected = Decimal(0)
    for op, amount in sequence:
        try:
            with unit_of_work(session_factory) as s:
                getattr(service, op)(s, account_id, amount)
        except (ValidationError, InsufficientMargin):
            assert amount <= 0 or (op == "withdraw" and amount > expected)
            continue
        expected += amount if op == "deposit" else -amount
    with unit_of_work(session_factory) as s:
        account = service.get_account(s, account_id)
        assert account.wallet_balance == expected >= 0
        assert ledger_sum(s, account_id) == expected
        rows = s.execute(
            select(LedgerEntry)
            .where(LedgerEntry.sub_account_id == account_id)
            .order_by(LedgerEntry.id)
        ).scalars()
        running = Decimal(0)
        for row in rows:
            running += row.amount
            assert row.balance_after == running


def test_the_operator_cannot_withdraw_while_a_market_order_is_being_placed(
    session_factory: sessionmaker[Session],
) -> None:
    """Without prices (the operator CLI's path) the margin of a market order in flight is
    unknown; it passed its pre-trade check against this balance. A resting limit order or a
    reduce-only market order does not stop a withdrawal of what is free."""
    account_id, _ = funded_account(session_factory, "1000")

    def intent(price: str | None, reduce_only: bool, status: str = "PENDING_NEW") -> int:
        with unit_of_work(session_factory) as s:
            order = Order(
                client_order_id=f"pms-w{uuid.uuid4().hex[:12]}",
                sub_account_id=account_id,
                symbol="BTC/USDT:USDT",
                side="BUY",
                type="LIMIT" if price else "MARKET",
                qty=Decimal("0.01"),
                price=Decimal(price) if price else None,
                reduce_only=reduce_only,
                post_only=False,
                leverage=10,
                status=status,
                filled_qty=Decimal(0),
                origin="manual",
            )
            s.add(order)
            s.flush()
            return order.id

    intent("60000", reduce_only=False, status="NEW")  # holds 60 of margin
    intent(None, reduce_only=True)  # a close in flight holds nothing
    with unit_of_work(session_factory) as s:
        service.withdraw(s, account_id, Decimal("900"))  # 1000 - 60 = 940 free

    market = intent(None, reduce_only=False)
    with (
        pytest.raises(InsufficientMargin, match=r"1 market order\(s\).*being placed"),
        unit_of_work(session_factory) as s,
    ):
        service.withdraw(s, account_id, Decimal("1"))
    assert balance(session_factory, account_id) == Decimal("100")

    with unit_of_work(session_factory) as s:
        s.get(Order, market).status = "FILLED"
        s.get(Order, market).filled_qty = Decimal("0.01")
    with unit_of_work(session_factory) as s:
        assert service.withdraw(s, account_id, Decimal("1")).balance_after == Decimal("99")
