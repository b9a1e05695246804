"""Warming a process's engine graph before its first command, without side effects.

A worker's first command pays for everything done once per process: opening pooled
Postgres connections (each PREPAREs the order-context statement), SQLAlchemy compiling each
statement for this engine, the exchange's instruments. Measured with a fresh engine graph in
the test harness: a liquidation's enforcement took 130 ms the first time and 42-46 ms after.
A liquidation may well be a worker's first command (a restart during a crash), so workers
rehearse at boot: they open connections, then run the hot paths' reads with ids that match
nothing, in a transaction that is rolled back. Nothing is written, no exchange order is sent.
"""

from __future__ import annotations

import contextlib
from datetime import UTC, datetime
from decimal import Decimal

import structlog
from sqlalchemy import Connection

from pms.accounts.ledger import lock_account
from pms.app import App
from pms.domain.enums import Side
from pms.errors import NotFound
from pms.exchange.model import TradeReport
from pms.execution.booking import book_fills
from pms.execution.context import open_orders_of, open_positions_of
from pms.riskengine.books import load_books

log = structlog.get_logger(__name__)

NO_SUCH_ID = -1
_NO_SUCH_TRADE = TradeReport(
    symbol="WARMUP",
    trade_id="warm-up",
    exchange_order_id="warm-up",
    client_order_id="warm-up",
    side=Side.BUY,
    qty=Decimal(1),
    price=Decimal(1),
    fee=Decimal(0),
    fee_asset="USDT",
    is_maker=False,
    traded_at=datetime(2000, 1, 1, tzinfo=UTC),
)


def open_connections(app: App, count: int) -> int:
    """Check out ``count`` pooled connections at once and return them: each is opened (and
    its statements prepared) now rather than by a command. Returns how many were opened."""
    held: list[Connection] = []
    try:
        for _ in range(count):
            held.append(app.db.connect())
    finally:
        for conn in held:
            conn.close()
    return len(held)


def rehearse_reads(app: App) -> None:
    """Run the order, booking and risk paths' reads for ids that match nothing, in one
    transaction that is rolled back: their statements are compiled for this engine."""
    session = app.sessions()
    try:
        with contextlib.suppress(NotFound):
            lock_account(session, NO_SUCH_ID)
        if book_fills(session, [_NO_SUCH_TRADE], "warm-up") != [None]:
            # Rolled back below either way; a match means the warm-up ids are not inert.
            raise RuntimeError("the warm-up trade matched an order")
        load_books(session, [NO_SUCH_ID])
        open_positions_of(session, [NO_SUCH_ID])
        open_orders_of(session, [NO_SUCH_ID])
    finally:
        session.rollback()
        session.close()


def warm_database(app: App, *, connections: int) -> None:
    """``connections`` open connections, then the hot paths' statements compiled."""
    opened = open_connections(app, connections)
    rehearse_reads(app)
    log.debug("database warmed", connections=opened)
