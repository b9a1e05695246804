"""The one fill-booking path. Every way we learn of a fill (the REST response, the user
stream, order-sync, a takeover) calls :func:`book_fill`.

In one transaction, under the sub-account's row lock: the fill row (unique per symbol and
exchange trade id, so a fill reported twice is booked once), the order's filled quantity and
average price, the position (open, add, reduce, close, flip; weighted entry; realized PnL;
fees) and the ledger (realized PnL and fee entries). A sub-account's balance never goes below
zero: a loss beyond it is charged to the house account as an INSURANCE entry.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from decimal import Decimal
from typing import Any

from sqlalchemy import bindparam, select
from sqlalchemy.orm import Session
from sqlalchemy.orm.attributes import set_committed_value

from pms.accounts.ledger import lock_account, post_entry
from pms.accounts.service import house_account
from pms.db.models import Order, Position, SubAccount
from pms.domain.enums import LedgerKind, OrderStatus
from pms.domain.numbers import ZERO
from pms.exchange.model import TradeReport
from pms.execution import views
from pms.execution.position_math import FillEffect, apply_fill
from pms.messaging.events import EventType

TERMINAL = {
    OrderStatus.FILLED.value,
    OrderStatus.CANCELED.value,
    OrderStatus.EXPIRED.value,
    OrderStatus.REJECTED.value,
}
Event = tuple[EventType, int, dict[str, Any]]


@dataclass(slots=True)
class Booked:
    fill_id: int
    sub_account_id: int
    events: list[Event] = field(default_factory=list)
    open_positions: list[dict[str, Any]] = field(default_factory=list)


def find_order(session: Session, trade: TradeReport) -> Order | None:
    if trade.client_order_id:
        order = session.execute(
            select(Order).where(Order.client_order_id == trade.client_order_id)
        ).scalar_one_or_none()
        if order is not None:
            return order
    return session.execute(
        select(Order).where(
            Order.symbol == trade.symbol, Order.exchange_order_id == trade.exchange_order_id
        )
    ).scalar_one_or_none()


def book_fill(session: Session, trade: TradeReport, source: str) -> Booked | None:
    """Book ``trade`` once. Returns None when it was already booked or is not one of ours."""
    order = find_order(session, trade)
    if order is None:
        return None
    account = lock_account(session, order.sub_account_id)
    return _book(session, account, order, trade, source, order.leverage)


def book_order_fill(
    session: Session, account: SubAccount, order: Order, trade: TradeReport, source: str
) -> Booked | None:
    """:func:`book_fill` for a caller that already holds the sub-account's lock and then the
    order's (``SELECT ... FOR UPDATE``, both loaded as locked) and knows ``trade`` is that
    order's: skips finding and re-locking them."""
    return _book(session, account, order, trade, source, order.leverage, order_locked=True)


def book_transfer_fill(
    session: Session, account: SubAccount, trade: TradeReport, source: str, leverage: int
) -> Booked | None:
    """Book a fill that no exchange order made: one leg of a takeover at mark price.

    ``trade.trade_id`` must be unique per symbol (e.g. ``takeover:{event}:{account}``); the
    caller holds the account's lock.
    """
    return _book(session, account, None, trade, source, leverage)


_LOCK_OPEN_POSITIONS = (
    select(Position)
    .where(Position.sub_account_id == bindparam("id"), Position.closed_at.is_(None))
    .order_by(Position.id)
    .with_for_update()
)

# Once per (symbol, exchange trade id): a fill reported again conflicts and returns no row.
_INSERT_FILL_SQL = """
INSERT INTO fills (sub_account_id, order_id, symbol, exchange_trade_id, side, qty, price, fee,
  fee_asset, realized_pnl, is_maker, source, traded_at)
VALUES (%(sub_account_id)s, %(order_id)s, %(symbol)s, %(exchange_trade_id)s, %(side)s, %(qty)s,
  %(price)s, %(fee)s, %(fee_asset)s, %(realized_pnl)s, %(is_maker)s, %(source)s, %(traded_at)s)
ON CONFLICT ON CONSTRAINT uq_fills_trade DO NOTHING
RETURNING id
"""


def _book(
    session: Session,
    account: SubAccount,
    order: Order | None,
    trade: TradeReport,
    source: str,
    leverage: int,
    *,
    order_locked: bool = False,
) -> Booked | None:
    # Locks in the path's order (account held by the caller, then the order, then the
    # account's open positions), then the fill row with its realized PnL: a fill already
    # booked conflicts and nothing else is written.
    if order is not None and not order_locked:
        session.refresh(order, with_for_update=True)
    # No autoflush until the position is written: the order's pending changes (the caller's
    # acknowledgement, this fill) go out in one UPDATE with the booking's flush. Anything
    # else the caller left pending is flushed first, as an autoflush would have.
    if session.new or any(obj is not order for obj in session.dirty):
        session.flush()
    with session.no_autoflush:
        return _book_locked(session, account, order, trade, source, leverage)


def _book_locked(
    session: Session,
    account: SubAccount,
    order: Order | None,
    trade: TradeReport,
    source: str,
    leverage: int,
) -> Booked | None:
    positions = list(session.execute(_LOCK_OPEN_POSITIONS, {"id": account.id}).scalars())
    position = next((p for p in positions if p.symbol == trade.symbol), None)
    qty = position.qty if position else ZERO
    entry = position.entry_price if position else ZERO
    effect = apply_fill(qty, entry, trade.side, trade.qty, trade.price)
    fill_id = (
        session.connection()
        .exec_driver_sql(
            _INSERT_FILL_SQL,
            {
                "sub_account_id": account.id,
                "order_id": order.id if order else None,
                "symbol": trade.symbol,
                "exchange_trade_id": trade.trade_id,
                "side": trade.side.value,
                "qty": trade.qty,
                "price": trade.price,
                "fee": trade.fee,
                "fee_asset": trade.fee_asset,
                "realized_pnl": effect.realized,
                "is_maker": trade.is_maker,
                "source": source,
                "traded_at": trade.traded_at,
            },
        )
        .scalar()
    )
    if fill_id is None:
        return None
    if order is not None:
        _update_order(order, trade)
    fee_usdt = trade.fee if trade.fee_asset == "USDT" else ZERO
    position = _update_position(
        session, account.id, position, positions, trade, leverage, fee_usdt, effect
    )
    realized = effect.realized
    balance_events = _post_pnl_and_fee(session, account, realized, fee_usdt, fill_id)

    booked = Booked(fill_id=fill_id, sub_account_id=account.id)
    booked.events.append(
        (EventType.TRADE_FILL, account.id, views.fill_view(fill_id, order, trade, realized, source))
    )
    if order is not None:
        booked.events.append((EventType.ORDER_UPDATE, account.id, views.order_view(order)))
    if position is not None:
        booked.events.append((EventType.POSITION_UPDATE, account.id, views.position_view(position)))
    booked.events.extend(balance_events)
    still_open = sorted(
        (p for p in positions if p.closed_at is None), key=lambda p: p.symbol.encode()
    )
    booked.open_positions = [views.position_view(p) for p in still_open]
    return booked


def _update_order(order: Order, trade: TradeReport) -> None:
    new_filled = min(order.filled_qty + trade.qty, order.qty)
    previous_cost = (order.avg_price or ZERO) * order.filled_qty
    order.avg_price = ((previous_cost + trade.price * trade.qty) / new_filled).quantize(
        Decimal("1e-12")
    )
    order.filled_qty = new_filled
    if order.status not in TERMINAL:
        order.status = (
            OrderStatus.FILLED.value
            if new_filled == order.qty
            else OrderStatus.PARTIALLY_FILLED.value
        )
    if trade.order_status in TERMINAL:
        order.status = trade.order_status
    if order.exchange_order_id is None:
        order.exchange_order_id = trade.exchange_order_id


def _update_position(
    session: Session,
    sub_account_id: int,
    position: Position | None,
    positions: list[Position],
    trade: TradeReport,
    leverage: int,
    fee: Decimal,
    effect: FillEffect,
) -> Position:
    """Apply the fill to the open position (the fee is charged to the row left open).
    ``positions``: the account's open positions, locked; rows opened here are appended."""
    if position is None:
        position = Position(
            sub_account_id=sub_account_id,
            symbol=trade.symbol,
            qty=ZERO,
            entry_price=ZERO,
            realized_pnl=ZERO,
            fees_paid=ZERO,
            leverage=leverage,
            opened_at=trade.traded_at,
        )
        session.add(position)
        positions.append(position)
    position.realized_pnl += effect.realized
    position.updated_at = trade.traded_at
    if effect.flipped:
        # Close the old row (it keeps its realized PnL); the remainder opens a new row.
        position.qty = ZERO
        position.closed_at = trade.traded_at
        session.flush()
        position = Position(
            sub_account_id=sub_account_id,
            symbol=trade.symbol,
            qty=effect.qty,
            entry_price=effect.entry,
            realized_pnl=ZERO,
            fees_paid=ZERO,
            leverage=leverage,
            opened_at=trade.traded_at,
            updated_at=trade.traded_at,
        )
        session.add(position)
        positions.append(position)
    elif effect.qty == 0:
        position.qty = ZERO
        position.closed_at = trade.traded_at
    else:
        position.qty = effect.qty
        position.entry_price = effect.entry
    position.fees_paid += fee
    session.flush()
    return position


# The ledger entries of one fill and the resulting balance, as one statement (the caller holds
# the account's lock; the ORM copy of the balance is set to the same value afterwards).
_POST_ENTRIES_SQL = """
WITH e AS (
  INSERT INTO ledger_entries (sub_account_id, kind, amount, balance_after, ref_type, ref_id)
  VALUES {values}
  RETURNING 1
)
UPDATE sub_accounts SET wallet_balance = %(balance)s, updated_at = now()
WHERE id = %(account)s AND (SELECT count(*) FROM e) = %(n)s
"""


def _post_pnl_and_fee(
    session: Session, account: SubAccount, realized: Decimal, fee: Decimal, fill_id: int
) -> list[Event]:
    """Post realized PnL then the fee; what would take the balance below zero is posted up
    to the balance and the shortfall charged to the house (INSURANCE)."""
    before = account.wallet_balance
    balance = before
    shortfall = ZERO
    entries: list[tuple[LedgerKind, Decimal, Decimal]] = []
    for kind, amount in ((LedgerKind.REALIZED_PNL, realized), (LedgerKind.FEE, -fee)):
        if amount == 0:
            continue
        if (
            balance + amount < 0 and not account.is_house
        ):  # the house is the insurer: it may go below zero
            shortfall += -(balance + amount)
            amount = -balance
        if amount != 0:
            balance += amount
            entries.append((kind, amount, balance))
    if entries:
        params: dict[str, Any] = {
            "balance": balance,
            "account": account.id,
            "n": len(entries),
            "ref_type": "fill",
            "ref_id": str(fill_id),
        }
        rows = []
        for i, (kind, amount, after) in enumerate(entries):
            params[f"k{i}"], params[f"a{i}"], params[f"b{i}"] = kind.value, amount, after
            rows.append(f"(%(account)s, %(k{i})s, %(a{i})s, %(b{i})s, %(ref_type)s, %(ref_id)s)")
        updated = (
            session.connection()
            .exec_driver_sql(_POST_ENTRIES_SQL.format(values=", ".join(rows)), params)
            .rowcount
        )
        assert updated == 1, "the ledger entries and the balance move together"
        set_committed_value(account, "wallet_balance", balance)
    events: list[Event] = []
    if shortfall > 0:
        absorb_shortfall(
            session, account.id, shortfall, ref_type="fill", ref_id=str(fill_id), events=events
        )
    if account.wallet_balance != before:
        events.insert(
            0,
            (
                EventType.BALANCE_UPDATE,
                account.id,
                views.balance_view(account, account.wallet_balance - before, "fill"),
            ),
        )
    return events


def absorb_shortfall(
    session: Session,
    sub_account_id: int,
    shortfall: Decimal,
    *,
    ref_type: str,
    ref_id: str,
    events: list[Event],
) -> None:
    """The house insurance entry pays for a loss a sub-account's balance could not cover."""
    house = lock_account(session, house_account(session).id)
    post_entry(
        session,
        house,
        LedgerKind.INSURANCE,
        -shortfall,
        ref_type=ref_type,
        ref_id=f"{ref_id}:{sub_account_id}",
        note=f"shortfall of sub-account {sub_account_id}",
    )
    events.append(
        (EventType.BALANCE_UPDATE, house.id, views.balance_view(house, -shortfall, "insurance"))
    )
