"""Position-sync: for every symbol, the sum of sub-account positions (house included) must
equal the master account's position on the exchange, apart from fills in flight.

A difference is first given a chance to explain itself (an order-sync for that symbol books
fills that were in flight); what remains raises ``position_drift`` with its size and the
likely cause. (The ``pms_position_drift`` gauge is the API's: ``/metrics`` computes it when
scraped, pms.api.metrics; a gauge set here, in a worker, kept the last value of a symbol
that had since gone flat.)
"""

from __future__ import annotations

from dataclasses import dataclass
from decimal import Decimal
from typing import Any

import structlog
from sqlalchemy import func, select

from pms.app import App
from pms.db.models import Order, Position
from pms.db.session import unit_of_work
from pms.domain.enums import OrderStatus
from pms.domain.numbers import ZERO, to_wire
from pms.messaging.events import EventType
from pms.sync.orders import sync_orders

log = structlog.get_logger(__name__)


@dataclass(frozen=True, slots=True)
class Drift:
    symbol: str
    exchange_qty: Decimal
    books_qty: Decimal
    cause: str

    @property
    def diff(self) -> Decimal:
        return self.exchange_qty - self.books_qty

    def as_dict(self) -> dict[str, Any]:
        return {
            "symbol": self.symbol,
            "exchangeQty": to_wire(self.exchange_qty),
            "booksQty": to_wire(self.books_qty),
            "diff": to_wire(self.diff),
            "cause": self.cause,
        }


def book_positions(app: App) -> dict[str, Decimal]:
    with unit_of_work(app.sessions) as s:
        rows = s.execute(
            select(Position.symbol, func.sum(Position.qty))
            .where(Position.closed_at.is_(None))
            .group_by(Position.symbol)
        ).all()
    return {symbol: Decimal(total) for symbol, total in rows}


def exchange_positions(app: App) -> dict[str, Decimal]:
    return {p.symbol: p.qty for p in app.exchange.fetch_positions()}


def _diffs(app: App) -> dict[str, tuple[Decimal, Decimal]]:
    ours, theirs = book_positions(app), exchange_positions(app)
    out = {}
    for symbol in sorted(set(ours) | set(theirs)):
        a, b = theirs.get(symbol, ZERO), ours.get(symbol, ZERO)
        if a != b:
            out[symbol] = (a, b)
    return out


def _cause(app: App, symbol: str, diff: Decimal) -> str:
    with unit_of_work(app.sessions) as s:
        in_flight = s.execute(
            select(func.count())
            .select_from(Order)
            .where(
                Order.symbol == symbol,
                Order.status.in_([st.value for st in OrderStatus if st.is_open]),
            )
        ).scalar_one()
    if in_flight:
        return f"{in_flight} open order(s) on {symbol}: fills may be in flight; re-check after order-sync"
    return (
        "no open order explains it: a trade on the master account outside the engine, a manual"
        " position change, or a fill the engine never learned of"
    )


def sync_positions(app: App) -> list[Drift]:
    diffs = _diffs(app)
    if diffs:
        for symbol in diffs:
            if sync_orders(app, symbol).rate_limited:
                # No more calls this run (a 429 is followed by a ban, not by an answer), and
                # no drift reported that order-sync might still have explained.
                log.warning("position-sync stopped: the exchange is rate limiting us")
                return []
        diffs = _diffs(app)
    drifts = [Drift(symbol, a, b, _cause(app, symbol, a - b)) for symbol, (a, b) in diffs.items()]
    for drift in drifts:
        log.error("position drift", **drift.as_dict())
        app.notifier.event(EventType.POSITION_DRIFT, None, drift.as_dict())
    return drifts
