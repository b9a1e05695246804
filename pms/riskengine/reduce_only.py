"""Cancel the reduce-only orders a sub-account's smaller position no longer covers
(:mod:`pms.risk.reduce_only` decides which). Run by enforcement when the risk monitor sees a
book with such orders."""

from __future__ import annotations

import structlog
from sqlalchemy import select

from pms.app import App
from pms.db.models import Order
from pms.db.session import unit_of_work
from pms.domain.enums import Side
from pms.execution.context import OPEN_STATUSES, open_positions
from pms.risk.reduce_only import WorkingReduceOnly, uncovered
from pms.riskengine.books import AccountBook

log = structlog.get_logger(__name__)


def has_uncovered(book: AccountBook) -> bool:
    """Whether the book holds an uncovered reduce-only limit order. A market order in flight
    (price None) is left out, here and when cancelling: it fills at once, and a close in
    flight is what makes a take-profit stale, not a reason to cancel it before the close's
    fill is booked."""
    candidates = [
        WorkingReduceOnly(i, o.symbol, o.side, o.qty)
        for i, o in enumerate(book.orders)  # by order id: oldest first
        if o.reduce_only and o.price is not None
    ]
    if not candidates:
        return False
    return bool(uncovered(candidates, {sym: p.qty for sym, p in book.positions.items()}))


def cancel_uncovered(app: App, sub_account_id: int) -> list[int]:
    """Cancel the sub-account's uncovered reduce-only limit orders; returns their ids. Raises
    what :meth:`OrderService.cancel_ids` raises when a cancel failed (the others went on)."""
    with unit_of_work(app.sessions) as s:
        positions = {sym: p.qty for sym, p in open_positions(s, sub_account_id).items()}
        rows = s.execute(
            select(Order.id, Order.symbol, Order.side, Order.qty - Order.filled_qty)
            .where(
                Order.sub_account_id == sub_account_id,
                Order.reduce_only,
                Order.price.is_not(None),  # a market order in flight is not a candidate
                Order.status.in_(OPEN_STATUSES),
            )
            .order_by(Order.id)
        ).all()
    doomed = uncovered(
        (WorkingReduceOnly(i, sym, Side(side), left) for i, sym, side, left in rows), positions
    )
    ids = [o.order_id for o in doomed]
    if ids:
        log.warning(
            "cancelling reduce-only orders the position no longer covers",
            subAccountId=sub_account_id,
            orderIds=ids,
        )
        app.orders.cancel_ids(ids)
    return ids
