"""Wire views (camelCase, decimal strings) of orders, fills, positions and balances: the
``data`` of results and events (documented in docs/events.md)."""

from __future__ import annotations

from decimal import Decimal
from typing import Any

from pms.db.models import Order, Position, SubAccount
from pms.domain.numbers import to_wire
from pms.exchange.model import TradeReport


def _opt(value: Decimal | None) -> str | None:
    return None if value is None else to_wire(value)


def order_view(order: Order) -> dict[str, Any]:
    return {
        "orderId": order.id,
        "clientOrderId": order.client_order_id,
        "exchangeOrderId": order.exchange_order_id,
        "subAccountId": order.sub_account_id,
        "symbol": order.symbol,
        "side": order.side,
        "type": order.type,
        "qty": to_wire(order.qty),
        "price": _opt(order.price),
        "reduceOnly": order.reduce_only,
        "postOnly": order.post_only,
        "timeInForce": order.time_in_force,
        "leverage": order.leverage,
        "status": order.status,
        "filledQty": to_wire(order.filled_qty),
        "avgPrice": _opt(order.avg_price),
        "origin": order.origin,
        "rejectReason": order.reject_reason,
    }


def fill_view(
    fill_id: int, order: Order | None, trade: TradeReport, realized: Decimal, source: str
) -> dict[str, Any]:
    return {
        "fillId": fill_id,
        "orderId": order.id if order else None,
        "clientOrderId": order.client_order_id if order else None,
        "symbol": trade.symbol,
        "side": trade.side.value,
        "qty": to_wire(trade.qty),
        "price": to_wire(trade.price),
        "fee": to_wire(trade.fee),
        "feeAsset": trade.fee_asset,
        "realizedPnl": to_wire(realized),
        "maker": trade.is_maker,
        "tradeId": trade.trade_id,
        "origin": order.origin if order else source,
        "source": source,
        "tradedAt": int(trade.traded_at.timestamp() * 1000),
    }


def position_view(position: Position) -> dict[str, Any]:
    return {
        "symbol": position.symbol,
        "qty": to_wire(position.qty),
        "entryPrice": to_wire(position.entry_price),
        "leverage": position.leverage,
        "realizedPnl": to_wire(position.realized_pnl),
        "fees": to_wire(position.fees_paid),
        "status": "CLOSED" if position.closed_at is not None else "OPEN",
    }


def balance_view(account: SubAccount, change: Decimal, reason: str) -> dict[str, Any]:
    return balance_change_view(account.wallet_balance, change, reason)


def balance_change_view(balance: Decimal, change: Decimal, reason: str) -> dict[str, Any]:
    """A ``balance_update`` event's data: the balance after ``change``, and why."""
    return {"balance": to_wire(balance), "change": to_wire(change), "reason": reason}
