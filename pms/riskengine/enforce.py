"""Tier enforcement: what happens to a sub-account at each risk tier (SPEC §5).

``enforce(sub_account_id)`` is state-based and idempotent: it re-reads the account from
Postgres and prices from the cache, resumes any unfinished action, then acts on the tier it
finds. One enforcer per account at a time (a Postgres advisory lock, released if the worker
dies). Every action is a ``liquidation_events`` row written PENDING before it starts, so a
worker that dies mid-way leaves a plan that the next enforcement resumes, not repeats: the
orders it places carry request ids derived from the event id (and a leg index when an order
is split at the market max qty, :mod:`pms.riskengine.executor`), and the order service
resumes an order by request id instead of placing it again.

An action ends DONE, or FAILED when one of its orders was refused for a reason that will not
go away by retrying (a cut now larger than the position, an exchange refusal): the reason is
recorded in the event and published, and enforcement goes on to assess the account afresh
(a liquidation that failed leaves the account LIQUIDATING, so a new one starts at once). A
failure that may pass (exchange unavailable, rate limited) leaves the event PENDING and
enforcement stops there: the next one resumes it before deciding anything new on top of it.

The engine's own orders only reduce, and they go out whatever the account's status: the
pre-trade checks let a reducing engine order through a FROZEN account (``OrderIntent.by_engine``).
An action on a frozen account records ``"frozen": true``, and a liquidation's end puts FROZEN
back (only ``unfreeze_sub_account`` lifts a freeze).

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

from pms.accounts.freeze import LIQUIDATIONS, liquidating_frozen
from pms.accounts.ledger import lock_account
from pms.accounts.service import house_account
from pms.app import App
from pms.clock import Clock
from pms.db.models import LiquidationEvent, Order, Position, SubAccount
from pms.db.session import unit_of_work
from pms.domain.enums import AccountStatus, LiquidationMode, OrderType, Side, Tier
from pms.domain.numbers import to_wire
from pms.errors import PmsError
from pms.exchange.model import TradeReport
from pms.execution.booking import Booked, book_transfer_fill
from pms.messaging.events import EventType
from pms.risk.adl import plan_adl
from pms.risk.context import OrderIntent, is_risk_reducing
from pms.risk.snapshot import RiskSnapshot, compute_snapshot
from pms.risk.tiers import classify_tier
from pms.riskengine.books import AccountBook, load_book
from pms.riskengine.executor import Outcome, place_plan
from pms.riskengine.pacing import hold_reason
from pms.riskengine.reduce_only import cancel_uncovered, has_uncovered

log = structlog.get_logger(__name__)
LOCK_CLASS = 742  # advisory-lock namespace for risk enforcement


class RiskEnforcer:
    def __init__(self, app: App, clock: Clock | None = None) -> None:
        self.app = app
        self.clock = clock or app.clock

    # -- entry point ------------------------------------------------------------------------

    def enforce(self, sub_account_id: int, reason: str = "") -> dict[str, Any]:
        with self._exclusive(sub_account_id) as acquired:
            if not acquired:
                return {"subAccountId": sub_account_id, "skipped": "another enforcement is running"}
            with structlog.contextvars.bound_contextvars(subAccountId=sub_account_id):
                # A pending action ends DONE or FAILED here, or raises (retryable): nothing
                # new is decided on top of an action that may still place orders.
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
            # What the tier asks for; recorded unless held back (pms.riskengine.pacing:
            # market orders in flight, or a run of failures), which leaves the status as it
            # is: the monitor asks again every second, and after the booking awaited.
            decided: tuple[str, dict[str, Any]] | None = None
            if tier is Tier.LIQUIDATION or account.status == AccountStatus.LIQUIDATING.value:
                takeover = book.mode is LiquidationMode.TAKEOVER
                action = "liquidate_takeover" if takeover else "liquidate_close"
                decided = (action, {"reason": reason})
            elif tier in (Tier.ADL1, Tier.ADL2):
                plan = plan_adl(snap, tier, self.app.instruments.all(), book.thresholds)
                if plan.cuts:
                    cuts = [
                        {"symbol": c.symbol, "side": c.side.value, "qty": to_wire(c.qty)}
                        for c in plan.cuts
                    ]
                    details: dict[str, Any] = {
                        "cuts": cuts,
                        "projectedRatio": to_wire(plan.projected_ratio),
                        "reason": reason,
                    }
                    decided = ("adl", details)
            event_id = None
            if decided is not None:
                action, details = decided
                kind = LIQUIDATIONS if action in LIQUIDATIONS else ("adl",)
                hold = hold_reason(s, account.id, kind, self.clock.now())
                if hold is not None:
                    actions.append(hold)
                else:
                    if action in LIQUIDATIONS:
                        # A liquidation, once decided, runs to the end even if the price
                        # recovers. An admin freeze outlives it: remembered in the event,
                        # restored at the end.
                        if account.status == AccountStatus.FROZEN.value or (
                            account.status == AccountStatus.LIQUIDATING.value
                            and liquidating_frozen(s, account.id)
                        ):
                            details["frozen"] = True
                        account.status = AccountStatus.LIQUIDATING.value
                    event_id = self._record(s, account, tier, action, snap, details)
            status = account.status
        # The action first (a liquidation is time-critical); notifications after it, even
        # when the action must be resumed later (then enforcement reports its error last).
        unfinished: Exception | None = None
        if event_id is not None:
            try:
                self._run(event_id)
            except Exception as exc:  # re-raised below, after the notifications
                unfinished = exc
                actions.append(f"event {event_id} unfinished")
            else:
                actions.append(f"event {event_id}")
        if "restrict" in actions and status != AccountStatus.LIQUIDATING.value:
            # (A liquidation cancels every working order itself.)
            actions.append(f"cancelled {self._cancel_risk_increasing(sub_account_id)}")
        if status != AccountStatus.LIQUIDATING.value and has_uncovered(book):
            try:
                trimmed = cancel_uncovered(self.app, sub_account_id)
            except PmsError as exc:  # the monitor asks again while the book shows them
                log.warning("reduce-only orders not all cancelled", error=exc.to_error())
                actions.append("reduce-only cancel unfinished")
            else:
                actions.append(f"cancelled {len(trimmed)} reduce-only")
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
        if unfinished is not None:
            raise unfinished
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
            completed_at=self.clock.now() if done else None,
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
        """Cancel the working orders that could add risk. Orders on one side compete for the
        same position: the reduce-only ones (never cancelled here) take their share first,
        then the others, oldest first, are kept while they still fit in what is left."""
        with unit_of_work(self.app.sessions) as s:
            book = load_book(s, sub_account_id)
            ids = sorted(self.app.orders.open_order_ids(s, sub_account_id))
            orders = [o for o in (s.get(Order, i) for i in ids) if o is not None]
        assert book is not None
        taken: dict[tuple[str, str], Decimal] = {}
        for order in orders:
            if order.reduce_only:
                key = (order.symbol, order.side)
                taken[key] = taken.get(key, Decimal(0)) + order.qty - order.filled_qty
        doomed = []
        for order in orders:
            if order.reduce_only:
                continue
            key = (order.symbol, order.side)
            held = book.positions.get(order.symbol)
            intent = OrderIntent(
                symbol=order.symbol,
                side=Side(order.side),
                qty=order.qty - order.filled_qty,
                order_type=OrderType(order.type),
            )
            working = taken.get(key, Decimal(0))
            if is_risk_reducing(intent, held.qty if held else Decimal(0), working):
                taken[key] = working + intent.qty
            else:
                doomed.append(order.id)
        if doomed:
            self.app.orders.cancel_ids(doomed)
        return len(doomed)

    def _run(self, event_id: int) -> None:
        """Run (or resume) one recorded action and close its event DONE or FAILED; raises,
        leaving it PENDING, when an order failed for a reason that may pass."""
        action, sub_account_id, details = self._begin(event_id)
        with structlog.contextvars.bound_contextvars(liquidationEventId=event_id, action=action):
            if action == "adl":
                outcome = self._place(event_id, sub_account_id, details["cuts"], f"adl:{event_id}")
                result: dict[str, Any] = {"orders": outcome.orders}
            elif action == "liquidate_close":
                outcome, result = self._run_close(event_id, sub_account_id, details)
            elif action == "liquidate_takeover":
                outcome, result = Outcome(), self._run_takeover(event_id, sub_account_id)
            else:
                outcome, result = Outcome(), {}
            if outcome.retry is not None:
                log.warning("risk action unfinished: resumed later", failures=outcome.failures)
                raise outcome.retry
            self._finish(event_id, sub_account_id, action, details | result, outcome.failures)

    def _begin(self, event_id: int) -> tuple[str, int, dict[str, Any]]:
        """The event's action, account and plan. Under the account's lock: an action on a
        FROZEN account remembers it (``frozen``), and a close fixes its plan, the positions to close, once (a resumed close
        places the same legs, so it continues rather than repeats)."""
        with unit_of_work(self.app.sessions) as s:
            sub_account_id = s.execute(
                select(LiquidationEvent.sub_account_id).where(LiquidationEvent.id == event_id)
            ).scalar_one()
            account = lock_account(s, sub_account_id)
            event = s.get(LiquidationEvent, event_id, with_for_update=True)
            assert event is not None
            action, details = event.action, dict(event.details)
            if account.status == AccountStatus.FROZEN.value and action in ("adl", *LIQUIDATIONS):
                details["frozen"] = True
            if action == "liquidate_close" and "closes" not in details:
                details["closes"] = [
                    {
                        "symbol": p.symbol,
                        "side": (Side.SELL if p.qty > 0 else Side.BUY).value,
                        "qty": to_wire(abs(p.qty)),
                    }
                    for p in self._open_positions(s, sub_account_id)
                ]
            if details != event.details:
                event.details = details
        return action, sub_account_id, details

    def _place(
        self, event_id: int, sub_account_id: int, plan: list[dict[str, Any]], origin: str
    ) -> Outcome:
        return place_plan(
            self.app.orders, self.app.instruments, event_id, sub_account_id, plan, origin=origin
        )

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

    def _run_close(
        self, event_id: int, sub_account_id: int, details: dict[str, Any]
    ) -> tuple[Outcome, dict[str, Any]]:
        """Cancel the working orders, then close every planned position. A cancel that did
        not complete does not hold the closes back (they only reduce); it leaves the event to
        be resumed, which cancels what is left."""
        cancel_error: Exception | None = None
        try:
            cancelled = self._cancel_others(event_id, sub_account_id)
        except Exception as exc:  # recorded with the outcome
            cancel_error = exc
            done = exc.details.get("cancelled", []) if isinstance(exc, PmsError) else []
            cancelled = len(done)
        outcome = self._place(event_id, sub_account_id, details["closes"], "liquidation")
        if cancel_error is not None:
            outcome.failed({"step": "cancel"}, cancel_error)
        return outcome, {"orders": outcome.orders, "cancelledOrders": cancelled}

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

    @staticmethod
    def _open_positions(s: Any, sub_account_id: int) -> list[Position]:
        return list(
            s.execute(
                select(Position)
                .where(Position.sub_account_id == sub_account_id, Position.closed_at.is_(None))
                .order_by(Position.symbol)
            ).scalars()
        )

    def _finish(
        self,
        event_id: int,
        sub_account_id: int,
        action: str,
        details: dict[str, Any],
        failures: list[dict[str, Any]],
    ) -> None:
        """Close the event DONE (or FAILED, with the failures) and settle the status: a flat
        account after a liquidation is ACTIVE again, or FROZEN if it was frozen; one that
        still holds positions stays LIQUIDATING (the next assessment starts a new
        liquidation); an ADL leaves the status as it is."""
        with unit_of_work(self.app.sessions) as s:
            account = lock_account(s, sub_account_id)
            event = s.get(LiquidationEvent, event_id, with_for_update=True)
            assert event is not None
            # Frozen before the action (remembered in the event: read back, an admin may have
            # lifted it while the action ran), or by an admin while it ran.
            remembered = bool(event.details.get("frozen"))
            frozen = remembered or account.status == AccountStatus.FROZEN.value
            if "frozen" in details or "frozen" in event.details:
                details = details | {"frozen": remembered}
            if event.details.get("unfrozen"):
                details = details | {"unfrozen": True}
            if action in LIQUIDATIONS:
                if not self._has_positions(s, sub_account_id):
                    restored = AccountStatus.FROZEN if frozen else AccountStatus.ACTIVE
                    account.status = restored.value
                    account.tier = Tier.NORMAL.value
                else:
                    # Positions left: the next assessment starts a new liquidation (one, once
                    # decided, runs to the end, even on an account frozen while it ran).
                    account.status = AccountStatus.LIQUIDATING.value
                    if frozen:
                        details = details | {"frozen": True}
            status = "FAILED" if failures else "DONE"
            details = details | {
                "walletAfter": to_wire(account.wallet_balance),
                "statusAfter": account.status,
            }
            if failures:
                details["failures"] = failures
                log.error("risk action failed", failures=failures)
            event.status = status
            event.details = details
            event.completed_at = self.clock.now()
            view = {
                "eventId": event_id,
                "action": action,
                "tier": event.tier,
                "status": status,
                **details,
            }
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
