"""Tier enforcement: what happens to a sub-account at each risk tier (SPEC §5).

``enforce(sub_account_id)`` is state-based and idempotent: it re-reads the account from
Postgres and prices from the cache, resumes any unfinished action, then acts on the tier it
finds. One enforcer per account at a time (a Postgres advisory lock, released if the worker
dies). Every action is a ``liquidation_events`` row written PENDING before it starts, so a
worker that dies mid-way leaves a plan that the next enforcement resumes, not repeats: the
orders it places carry request ids derived from the event id, and the order service resumes
an order by request id instead of placing it again.

| tier        | action                                                                    |
| WARNING     | ``margin_call`` event, once per crossing                                 |
| RESTRICTED  | status RESTRICTED; risk-increasing open orders cancelled                 |
| ADL1 / ADL2 | reduce-only market cuts (25% / 50%) of the largest-maintenance positions |
| LIQUIDATION | ``close``: cancel orders, market-close all; ``takeover``: positions move |
|             | to the house at mark in one transaction, no exchange order               |
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from decimal import Decimal
from typing import Any

import structlog
from sqlalchemy import func, select, text

from pms.accounts.ledger import lock_account
from pms.accounts.service import house_account
from pms.app import App
from pms.db.models import LiquidationEvent, Order, Position, SubAccount
from pms.db.session import unit_of_work
from pms.domain.enums import AccountStatus, LiquidationMode, OrderType, Side, Tier
from pms.domain.numbers import to_wire
from pms.exchange.model import TradeReport
from pms.execution.booking import Booked, book_transfer_fill
from pms.messaging.events import EventType
from pms.risk.adl import plan_adl
from pms.risk.context import OrderIntent, is_risk_reducing
from pms.risk.snapshot import RiskSnapshot, compute_snapshot
from pms.risk.tiers import classify_tier
from pms.riskengine.books import AccountBook, load_book

log = structlog.get_logger(__name__)
LOCK_CLASS = 742  # advisory-lock namespace for risk enforcement


class RiskEnforcer:
    def __init__(self, app: App) -> None:
        self.app = app

    # -- entry point ------------------------------------------------------------------------

    def enforce(self, sub_account_id: int, reason: str = "") -> dict[str, Any]:
        with self._exclusive(sub_account_id) as acquired:
            if not acquired:
                return {"subAccountId": sub_account_id, "skipped": "another enforcement is running"}
            with structlog.contextvars.bound_contextvars(subAccountId=sub_account_id):
                for event_id in self._pending(sub_account_id):
                    self._run(event_id)
                return self._assess_and_act(sub_account_id, reason)

    @contextmanager
    def _exclusive(self, sub_account_id: int) -> Iterator[bool]:
        with self.app.db.connect() as conn:
            got = bool(
                conn.execute(
                    text("SELECT pg_try_advisory_lock(:c, :o)"),
                    {"c": LOCK_CLASS, "o": sub_account_id},
                ).scalar()
            )
            conn.commit()
            try:
                yield got
            finally:
                if got:
                    conn.execute(
                        text("SELECT pg_advisory_unlock(:c, :o)"),
                        {"c": LOCK_CLASS, "o": sub_account_id},
                    )
                    conn.commit()

    def _pending(self, sub_account_id: int) -> list[int]:
        with unit_of_work(self.app.sessions) as s:
            query = select(LiquidationEvent.id).where(
                LiquidationEvent.sub_account_id == sub_account_id,
                LiquidationEvent.status == "PENDING",
            )
            return list(s.execute(query.order_by(LiquidationEvent.id)).scalars())

    # -- assessment -------------------------------------------------------------------------

    def _snapshot(self, book: AccountBook) -> RiskSnapshot:
        marks = {symbol: self.app.prices.mark(symbol, fresh=True) for symbol in book.symbols}
        return compute_snapshot(
            book.wallet, book.positions.values(), book.orders, marks, self.app.instruments.all()
        )

    def _assess_and_act(self, sub_account_id: int, reason: str) -> dict[str, Any]:
        with unit_of_work(self.app.sessions) as s:
            book = load_book(s, sub_account_id)
        if book is None:
            return {"subAccountId": sub_account_id, "skipped": "no such sub-account"}
        snap = self._snapshot(book)
        tier = classify_tier(book.tier, snap.margin_ratio, book.thresholds)
        actions: list[str] = []
        with unit_of_work(self.app.sessions) as s:
            account = lock_account(s, sub_account_id)
            previous = Tier(account.tier)
            account.tier = tier.value
            if tier.severity >= Tier.WARNING.severity > previous.severity:
                self._record(s, account, tier, "margin_call", snap, {"reason": reason}, done=True)
                actions.append("margin_call")
            if (
                tier.severity >= Tier.RESTRICTED.severity
                and account.status == AccountStatus.ACTIVE.value
            ):
                account.status = AccountStatus.RESTRICTED.value
                actions.append("restrict")
            elif (
                tier.severity < Tier.RESTRICTED.severity
                and account.status == AccountStatus.RESTRICTED.value
            ):
                account.status = AccountStatus.ACTIVE.value
                actions.append("restore")
            event_id = None
            if tier is Tier.LIQUIDATION or account.status == AccountStatus.LIQUIDATING.value:
                # A liquidation, once decided, runs to the end even if the price recovers.
                account.status = AccountStatus.LIQUIDATING.value
                takeover = book.mode is LiquidationMode.TAKEOVER
                action = "liquidate_takeover" if takeover else "liquidate_close"
                event_id = self._record(s, account, tier, action, snap, {"reason": reason})
            elif tier in (Tier.ADL1, Tier.ADL2):
                plan = plan_adl(snap, tier, self.app.instruments.all(), book.thresholds)
                if plan.cuts:
                    cuts = [
                        {"symbol": c.symbol, "side": c.side.value, "qty": to_wire(c.qty)}
                        for c in plan.cuts
                    ]
                    details = {
                        "cuts": cuts,
                        "projectedRatio": to_wire(plan.projected_ratio),
                        "reason": reason,
                    }
                    event_id = self._record(s, account, tier, "adl", snap, details)
            status = account.status
        # The action first (a liquidation is time-critical); notifications after it.
        if event_id is not None:
            self._run(event_id)
            actions.append(f"event {event_id}")
        if "restrict" in actions and status != AccountStatus.LIQUIDATING.value:
            # (A liquidation cancels every working order itself.)
            actions.append(f"cancelled {self._cancel_risk_increasing(sub_account_id)}")
        if "margin_call" in actions:
            self.app.notifier.event(
                EventType.MARGIN_CALL, sub_account_id, self._risk_view(snap, tier, reason)
            )
        if previous is not tier or actions:
            self.app.notifier.event(
                EventType.RISK_UPDATE,
                sub_account_id,
                {**self._risk_view(snap, tier, reason), "status": status},
            )
        log.info("risk enforced", tier=tier.value, ratio=str(snap.margin_ratio), actions=actions)
        return {"subAccountId": sub_account_id, "tier": tier.value, "actions": actions}

    def _record(
        self,
        s: Any,
        account: SubAccount,
        tier: Tier,
        action: str,
        snap: RiskSnapshot,
        details: dict[str, Any],
        *,
        done: bool = False,
    ) -> int:
        count = s.execute(
            select(func.count())
            .select_from(LiquidationEvent)
            .where(LiquidationEvent.sub_account_id == account.id, LiquidationEvent.action == action)
        ).scalar_one()
        event = LiquidationEvent(
            sub_account_id=account.id,
            idempotency_key=f"{account.id}:{action}:{count + 1}",
            tier=tier.value,
            action=action,
            status="DONE" if done else "PENDING",
            margin_ratio=None if not snap.margin_ratio.is_finite() else snap.margin_ratio,
            equity=snap.equity,
            details=details,
            completed_at=self.app.clock.now() if done else None,
        )
        s.add(event)
        s.flush()
        return int(event.id)

    @staticmethod
    def _risk_view(snap: RiskSnapshot, tier: Tier, reason: str) -> dict[str, Any]:
        ratio = (
            "Infinity"
            if not snap.margin_ratio.is_finite()
            else to_wire(snap.margin_ratio.quantize(Decimal("0.000001")))
        )
        return {
            "tier": tier.value,
            "marginRatio": ratio,
            "equity": to_wire(snap.equity),
            "maintenanceMargin": to_wire(snap.maintenance_margin),
            "reason": reason,
        }

    # -- actions ----------------------------------------------------------------------------

    def _cancel_risk_increasing(self, sub_account_id: int) -> int:
        with unit_of_work(self.app.sessions) as s:
            book = load_book(s, sub_account_id)
            ids = self.app.orders.open_order_ids(s, sub_account_id)
            orders = [s.get(Order, i) for i in ids]
        assert book is not None
        doomed = []
        for order in orders:
            if order is None or order.reduce_only:
                continue
            held = book.positions.get(order.symbol)
            intent = OrderIntent(
                symbol=order.symbol,
                side=Side(order.side),
                qty=order.qty - order.filled_qty,
                order_type=OrderType(order.type),
            )
            if not is_risk_reducing(intent, held.qty if held else Decimal(0)):
                doomed.append(order.id)
        if doomed:
            self.app.orders.cancel_ids(doomed)
        return len(doomed)

    def _run(self, event_id: int) -> None:
        with unit_of_work(self.app.sessions) as s:
            event = s.get(LiquidationEvent, event_id)
            assert event is not None
            action, sub_account_id, details = (
                event.action,
                event.sub_account_id,
                dict(event.details),
            )
        with structlog.contextvars.bound_contextvars(liquidationEventId=event_id, action=action):
            if action == "adl":
                outcome = self._run_adl(event_id, sub_account_id, details)
            elif action == "liquidate_close":
                outcome = self._run_close(event_id, sub_account_id)
            elif action == "liquidate_takeover":
                outcome = self._run_takeover(event_id, sub_account_id)
            else:
                outcome = {}
            self._finish(event_id, sub_account_id, action, details | outcome)

    def _run_adl(
        self, event_id: int, sub_account_id: int, details: dict[str, Any]
    ) -> dict[str, Any]:
        orders = []
        for cut in details["cuts"]:
            view = self.app.orders.place_internal(
                sub_account_id,
                cut["symbol"],
                Side(cut["side"]),
                Decimal(cut["qty"]),
                origin=f"adl:{event_id}",
                request_id=f"risk:{event_id}:{cut['symbol']}",
            )
            orders.append(view["orderId"])
        return {"orders": orders}

    def _cancel_others(self, event_id: int, sub_account_id: int) -> int:
        """Cancel the account's working orders, except the ones this event placed (a resumed
        event must not cancel its own close orders)."""
        with unit_of_work(self.app.sessions) as s:
            ids = self.app.orders.open_order_ids(s, sub_account_id)
            own = set(
                s.execute(
                    select(Order.id).where(
                        Order.id.in_(ids), Order.request_id.like(f"risk:{event_id}:%")
                    )
                ).scalars()
            )
        others = [i for i in ids if i not in own]
        if others:
            self.app.orders.cancel_ids(others)
        return len(others)

    def _run_close(self, event_id: int, sub_account_id: int) -> dict[str, Any]:
        cancelled = self._cancel_others(event_id, sub_account_id)
        orders = []
        for position in self._open_positions(sub_account_id):
            side = Side.SELL if position.qty > 0 else Side.BUY
            view = self.app.orders.place_internal(
                sub_account_id,
                position.symbol,
                side,
                abs(position.qty),
                origin="liquidation",
                request_id=f"risk:{event_id}:{position.symbol}",
            )
            orders.append(view["orderId"])
        return {"orders": orders, "cancelledOrders": cancelled}

    def _run_takeover(self, event_id: int, sub_account_id: int) -> dict[str, Any]:
        self._cancel_others(event_id, sub_account_id)
        booked: list[Booked] = []
        moved = []
        now = self.app.clock.now()
        with unit_of_work(self.app.sessions) as s:
            account = lock_account(s, sub_account_id)
            house = lock_account(s, house_account(s).id)
            positions = (
                s.execute(
                    select(Position)
                    .where(Position.sub_account_id == sub_account_id, Position.closed_at.is_(None))
                    .order_by(Position.symbol)
                )
                .scalars()
                .all()
            )
            for position in positions:
                qty, symbol, leverage = position.qty, position.symbol, position.leverage
                mark = self.app.prices.mark(symbol, fresh=True)
                closing = Side.SELL if qty > 0 else Side.BUY
                legs = (
                    (account, closing, f"takeover:{event_id}:{sub_account_id}"),
                    (house, closing.opposite, f"takeover:{event_id}:house"),
                )
                for holder, side, trade_id in legs:
                    trade = TradeReport(
                        symbol=symbol,
                        trade_id=trade_id,
                        exchange_order_id="",
                        client_order_id=None,
                        side=side,
                        qty=abs(qty),
                        price=mark,
                        fee=Decimal(0),
                        fee_asset="USDT",
                        is_maker=False,
                        traded_at=now,
                    )
                    result = book_transfer_fill(s, holder, trade, "takeover", leverage)
                    if result is not None:
                        booked.append(result)
                moved.append({"symbol": symbol, "qty": to_wire(qty), "price": to_wire(mark)})
        for result in booked:
            self.app.notifier.booked(result)
        return {"moved": moved}

    def _open_positions(self, sub_account_id: int) -> list[Position]:
        with unit_of_work(self.app.sessions) as s:
            return list(
                s.execute(
                    select(Position)
                    .where(Position.sub_account_id == sub_account_id, Position.closed_at.is_(None))
                    .order_by(Position.symbol)
                ).scalars()
            )

    def _finish(
        self, event_id: int, sub_account_id: int, action: str, details: dict[str, Any]
    ) -> None:
        with unit_of_work(self.app.sessions) as s:
            account = lock_account(s, sub_account_id)
            event = s.get(LiquidationEvent, event_id, with_for_update=True)
            assert event is not None
            if action.startswith("liquidate") and not self._has_positions(s, sub_account_id):
                account.status = AccountStatus.ACTIVE.value
                account.tier = Tier.NORMAL.value
            details = details | {
                "walletAfter": to_wire(account.wallet_balance),
                "statusAfter": account.status,
            }
            event.status = "DONE"
            event.details = details
            event.completed_at = self.app.clock.now()
            view = {"eventId": event_id, "action": action, "tier": event.tier, **details}
        self.app.notifier.event(EventType.LIQUIDATION, sub_account_id, view)

    @staticmethod
    def _has_positions(s: Any, sub_account_id: int) -> bool:
        return (
            s.execute(
                select(Position.id).where(
                    Position.sub_account_id == sub_account_id, Position.closed_at.is_(None)
                )
            ).first()
            is not None
        )
