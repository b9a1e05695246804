"""Helpers for the booking tests: orders straight into Postgres, trades as the exchange reports them."""

from __future__ import annotations

import itertools
from datetime import UTC, datetime
from decimal import Decimal
from typing import Any

from sqlalchemy import func, select
from sqlalchemy.orm import Session, sessionmaker

from pms.accounts.ledger import ledger_sum
from pms.db.models import LedgerEntry, Order, Position, SubAccount
from pms.db.session import unit_of_work
from pms.domain.enums import Side
from pms.exchange.model import ExchangeOrder, TradeReport
from pms.execution.booking import book_fill

D = Decimal
BTC = "BTC/USDT:USDT"
ETH = "ETH/USDT:USDT"
_trade_ids = itertools.count(3 * 10**9)


def make_order(
    factory: sessionmaker[Session],
    sub: int,
    side: str,
    qty: str,
    symbol: str = BTC,
    *,
    leverage: int = 10,
    status: str = "NEW",
) -> Order:
    with unit_of_work(factory) as s:
        oid = int(s.execute(select(func.nextval("orders_id_seq"))).scalar_one())
        order = Order(
            id=oid,
            client_order_id=f"pms-{oid}",
            sub_account_id=sub,
            symbol=symbol,
            side=side,
            type="MARKET",
            qty=D(qty),
            leverage=leverage,
            status=status,
            filled_qty=D(0),
            exchange_order_id=str(oid),
        )
        s.add(order)
    return order


def trade(
    order: Order,
    qty: str,
    price: str,
    fee: str = "0",
    *,
    fee_asset: str = "USDT",
    order_status: str | None = None,
    trade_id: str | None = None,
    with_coid: bool = True,
) -> TradeReport:
    return TradeReport(
        symbol=order.symbol,
        trade_id=trade_id or str(next(_trade_ids)),
        exchange_order_id=str(order.exchange_order_id or order.id),
        client_order_id=order.client_order_id if with_coid else None,
        side=Side(order.side),
        qty=D(qty),
        price=D(price),
        fee=D(fee),
        fee_asset=fee_asset,
        is_maker=False,
        traded_at=datetime(2026, 1, 1, tzinfo=UTC),
        order_status=order_status,
    )


def book(factory: sessionmaker[Session], t: TradeReport, source: str = "test") -> bool:
    with unit_of_work(factory) as s:
        return book_fill(s, t, source) is not None


def wallet(factory: sessionmaker[Session], sub: int) -> Decimal:
    with unit_of_work(factory) as s:
        account = s.get(SubAccount, sub)
        assert account is not None
        return account.wallet_balance


def ledger_total(factory: sessionmaker[Session], sub: int) -> Decimal:
    with unit_of_work(factory) as s:
        return ledger_sum(s, sub)


def ledger_rows(factory: sessionmaker[Session], sub: int) -> list[tuple[str, Decimal, Decimal]]:
    with unit_of_work(factory) as s:
        return [
            (e.kind, e.amount, e.balance_after)
            for e in s.execute(
                select(LedgerEntry)
                .where(LedgerEntry.sub_account_id == sub)
                .order_by(LedgerEntry.id)
            ).scalars()
        ]


def positions(factory: sessionmaker[Session], sub: int) -> list[Position]:
    with unit_of_work(factory) as s:
        rows = list(
            s.execute(
                select(Position).where(Position.sub_account_id == sub).order_by(Position.id)
            ).scalars()
        )
        s.expunge_all()
        return rows


def house_insurance_total(factory: sessionmaker[Session]) -> Decimal:
    with unit_of_work(factory) as s:
        house_id = s.execute(select(SubAccount.id).where(SubAccount.is_house)).scalar_one()
        total = s.execute(
            select(func.coalesce(func.sum(LedgerEntry.amount), 0)).where(
                LedgerEntry.sub_account_id == house_id, LedgerEntry.kind == "INSURANCE"
            )
        ).scalar_one()
        return D(total)


class Quiet:
    """A notifier that publishes nothing."""

    def __getattr__(self, name: str) -> Any:
        return lambda *a, **k: None


class FilledExchange:
    """The exchange's view of one order: FILLED with ``trades`` (its quantity ``qty``, the
    order's own unless it was amended there). Records the clientOrderIds it was asked about."""

    def __init__(self, order: Order, trades: list[TradeReport], qty: Decimal | None = None) -> None:
        self.order, self.trades = order, trades
        self.qty = order.qty if qty is None else qty
        self.asked: list[str] = []

    def fetch_order(self, symbol: str, client_order_id: str) -> ExchangeOrder | None:
        self.asked.append(client_order_id)
        if client_order_id != self.order.client_order_id:
            return None
        executed = sum((t.qty for t in self.trades), D(0))
        cost = sum((t.qty * t.price for t in self.trades), D(0))
        return ExchangeOrder(
            symbol=symbol,
            exchange_order_id=str(self.order.exchange_order_id),
            client_order_id=client_order_id,
            status="FILLED",
            side=Side(self.order.side),
            type="LIMIT",
            qty=self.qty,
            price=max((t.price for t in self.trades), default=D(0)),
            executed_qty=executed,
            avg_price=cost / executed if executed else D(0),
            reduce_only=False,
            update_time_ms=0,
        )

    def fetch_order_trades(self, symbol: str, exchange_order_id: str) -> list[TradeReport]:
        return list(self.trades)

    def fetch_open_orders(self, symbol: str | None = None) -> list[ExchangeOrder]:
        return []
