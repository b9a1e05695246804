"""Handlers of the ``pms.accounts`` commands: parse → unit of work → domain → result data."""

from __future__ import annotations

from decimal import Decimal
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session, sessionmaker

from pms.accounts import service
from pms.accounts.freeze import lift_liquidation_freeze, remember_liquidation_freeze
from pms.accounts.ledger import lock_account
from pms.clock import Clock
from pms.commands import schemas as cmd
from pms.db.models import LedgerEntry, RiskRules, SubAccount
from pms.db.session import unit_of_work
from pms.domain.enums import AccountStatus, LedgerKind
from pms.domain.numbers import to_wire
from pms.errors import DuplicateRequest, Forbidden, ValidationError
from pms.execution import views
from pms.execution.context import open_orders, open_positions
from pms.execution.context import rules_view as rules_view_of
from pms.execution.instruments import InstrumentCache
from pms.execution.notify import Notifier
from pms.execution.orders import OrderService, authorize
from pms.marketdata.prices import PriceService
from pms.messaging.events import EventType
from pms.risk.snapshot import compute_snapshot

_RULE_FIELDS = {
    "maxLeverage": "max_leverage",
    "maxNotionalPerSymbol": "max_notional_per_symbol",
    "maxExposureMultiple": "max_exposure_multiple",
    "liquidationMode": "liquidation_mode",
    "warningRatio": "warning_ratio",
    "restrictedRatio": "restricted_ratio",
    "adl1Ratio": "adl1_ratio",
    "adl2Ratio": "adl2_ratio",
    "liquidationRatio": "liquidation_ratio",
    "priceBandBps": "price_band_bps",
    "maxOrdersPerMinute": "max_orders_per_minute",
}


def rules_view(rules: RiskRules) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for wire, column in _RULE_FIELDS.items():
        value = getattr(rules, column)
        out[wire] = to_wire(value) if hasattr(value, "as_tuple") else value
    return out


def _require_admin(c: cmd.Command, what: str) -> None:
    if not c.is_admin:
        raise Forbidden(f"{what} requires an operator (role admin)")


class AccountCommands:
    def __init__(
        self,
        factory: sessionmaker[Session],
        orders: OrderService,
        notifier: Notifier,
        clock: Clock,
        prices: PriceService,
        instruments: InstrumentCache,
    ) -> None:
        self._factory = factory
        self._orders = orders
        self._notify = notifier
        self._clock = clock
        self._prices = prices
        self._instruments = instruments

    def create(self, c: cmd.CreateSubAccount) -> dict[str, Any]:
        """A new sub-account; the one this request created already, if a delivery before
        this one got that far (its result not stored: the command is still open)."""
        with unit_of_work(self._factory) as s:
            account = s.execute(
                select(SubAccount).where(SubAccount.request_id == c.requestId)
            ).scalar_one_or_none()
            if account is not None:
                if (account.owner_user_id, account.name) != (c.userId.strip(), c.name.strip()):
                    raise DuplicateRequest(
                        f"requestId {c.requestId} was already used for a different command"
                    )
            else:
                account = service.create_sub_account(s, c.userId, c.name, request_id=c.requestId)
            return {
                "subAccountId": account.id,
                "name": account.name,
                "userId": account.owner_user_id,
            }

    def deposit(self, c: cmd.Deposit) -> dict[str, Any]:
        return self._move(c, c.amount, deposit=True)

    def withdraw(self, c: cmd.Withdraw) -> dict[str, Any]:
        return self._move(c, c.amount, deposit=False)

    def _move(self, c: cmd.Deposit | cmd.Withdraw, amount: Any, *, deposit: bool) -> dict[str, Any]:
        with unit_of_work(self._factory) as s:
            account = lock_account(s, c.subAccountId)
            authorize(account, c.userId, c.is_admin)
            done = self._moved_already(s, c, amount, deposit=deposit)
            if done is not None:
                # A delivery before this one moved the money; its result was not stored (the
                # command is still open): answered from what it did, nothing moves again.
                balance = views.balance_change_view(
                    done.balance_after, done.amount, "deposit" if deposit else "withdrawal"
                )
                self._notify.event(EventType.BALANCE_UPDATE, c.subAccountId, balance)
                return {"subAccountId": c.subAccountId, "balance": balance["balance"]}
            if deposit:
                entry = service.deposit(s, c.subAccountId, amount, request_id=c.requestId)
            else:
                entry = service.withdraw(
                    s,
                    c.subAccountId,
                    amount,
                    request_id=c.requestId,
                    marked_available=self.available_at_marks(s, account),
                )
            balance = views.balance_view(
                account, entry.amount, "deposit" if deposit else "withdrawal"
            )
        self._notify.event(EventType.BALANCE_UPDATE, c.subAccountId, balance)
        return {"subAccountId": c.subAccountId, "balance": balance["balance"]}

    @staticmethod
    def _moved_already(
        s: Session, c: cmd.Deposit | cmd.Withdraw, amount: Decimal, *, deposit: bool
    ) -> LedgerEntry | None:
        """The entry this request posted already, if any; DuplicateRequest if the request id
        posted something else (the runner's own check cannot tell once its claim was lost)."""
        entry = s.execute(
            select(LedgerEntry).where(
                LedgerEntry.sub_account_id == c.subAccountId,
                LedgerEntry.kind.in_((LedgerKind.DEPOSIT.value, LedgerKind.WITHDRAWAL.value)),
                LedgerEntry.ref_type == "request",
                LedgerEntry.ref_id == c.requestId,
            )
        ).scalar_one_or_none()
        if entry is None:
            return None
        kind = LedgerKind.DEPOSIT if deposit else LedgerKind.WITHDRAWAL
        if entry.kind != kind.value or abs(entry.amount) != amount:
            raise DuplicateRequest(
                f"requestId {c.requestId} was already used for a different command",
                {"actor": "deposit" if entry.kind == LedgerKind.DEPOSIT.value else "withdraw"},
            )
        return entry

    def available_at_marks(self, s: Session, account: SubAccount) -> Decimal | None:
        """Equity minus initial margin at current marks (None with nothing open): what a
        withdrawal may take without touching money that covers an unrealized loss."""
        positions = open_positions(s, account.id)
        orders = open_orders(s, account.id)
        if not positions and not orders:
            return None
        symbols = set(positions) | {o.symbol for o in orders}
        marks = {symbol: self._prices.mark(symbol) for symbol in symbols}
        snap = compute_snapshot(
            account.wallet_balance, positions.values(), orders, marks, self._instruments.all()
        )
        return snap.available

    def update_risk_rules(self, c: cmd.UpdateRiskRules) -> dict[str, Any]:
        _require_admin(c, "changing risk rules")
        changes = {
            col: getattr(c, wire)
            for wire, col in _RULE_FIELDS.items()
            if getattr(c, wire) is not None
        }
        if not changes:
            raise ValidationError("no rule to change was given")
        with unit_of_work(self._factory) as s:
            lock_account(s, c.subAccountId)
            rules = s.get(RiskRules, c.subAccountId)
            assert rules is not None
            for column, value in changes.items():
                setattr(rules, column, value.value if hasattr(value, "value") else value)
            try:
                rules_view_of(rules)  # the thresholds must still be ordered
            except ValueError as exc:
                raise ValidationError(str(exc)) from None
            rules.updated_at = self._clock.now()
            s.flush()
            view = rules_view(rules)
        self._notify.risk_inputs_changed(c.subAccountId)
        return {"subAccountId": c.subAccountId, "rules": view}

    def freeze(self, c: cmd.FreezeSubAccount) -> dict[str, Any]:
        _require_admin(c, "freezing a sub-account")
        with unit_of_work(self._factory) as s:
            account = lock_account(s, c.subAccountId)
            if account.is_house:
                raise Forbidden("the house account cannot be frozen")
            if not (
                account.status == AccountStatus.LIQUIDATING.value
                and remember_liquidation_freeze(s, account.id)
            ):
                account.status = AccountStatus.FROZEN.value
            status = account.status
            ids = self._orders.open_order_ids(s, c.subAccountId)
        self._notify.risk_inputs_changed(c.subAccountId)
        cancelled = self._orders.cancel_ids(ids)["cancelled"] if ids else []
        self._notify.event(
            EventType.RISK_UPDATE,
            c.subAccountId,
            {"status": status, "frozen": True, "reason": c.reason},
        )
        return {
            "subAccountId": c.subAccountId,
            "status": status,
            "frozen": True,
            "cancelledOrders": len(cancelled),
        }

    def unfreeze(self, c: cmd.FreezeSubAccount) -> dict[str, Any]:
        """FROZEN → ACTIVE. A frozen account being liquidated stays LIQUIDATING: its
        liquidation forgets the freeze and ends ACTIVE instead of FROZEN (so does one frozen
        while a liquidation ran). An account that is not frozen is answered as it is (what
        a retry finds once its first attempt went through: the answer must not contradict
        it), with nothing changed and no event."""
        _require_admin(c, "unfreezing a sub-account")
        with unit_of_work(self._factory) as s:
            account = lock_account(s, c.subAccountId)
            if account.status == AccountStatus.FROZEN.value:
                account.status = AccountStatus.ACTIVE.value
                # Frozen while a liquidation ran: it must not put the freeze back at its end.
                lift_liquidation_freeze(s, account.id)
            elif not (
                account.status == AccountStatus.LIQUIDATING.value
                and lift_liquidation_freeze(s, account.id)
            ):
                return {"subAccountId": c.subAccountId, "status": account.status, "frozen": False}
            status = account.status
        self._notify.risk_inputs_changed(c.subAccountId)
        self._notify.event(
            EventType.RISK_UPDATE,
            c.subAccountId,
            {"status": status, "frozen": False, "reason": c.reason},
        )
        return {"subAccountId": c.subAccountId, "status": status, "frozen": False}
