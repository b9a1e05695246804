"""The one fill-booking path. Every way we learn of a fill (the REST response, the user
stream, order-sync, a takeover) calls :func:`book_fill`.

In one transaction, under the sub-account's row lock: the fill row (unique per symbol and
exchange trade id, so a fill reported twice is booked once), the order's filled quantity and
average price, the position (open, add, reduce, close, flip; weighted entry; realized PnL;
fees) and the ledger (realized PnL and fee entries). A sub-account's balance never goes below
zero: a loss beyond it is charged to the house account as an INSURANCE entry.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from decimal import Decimal
from typing import Any

import structlog
from sqlalchemy import bindparam, select
from sqlalchemy.orm import Session, make_transient_to_detached
from sqlalchemy.orm.attributes import instance_state, set_committed_value

from pms.accounts.ledger import lock_account, post_entry
from pms.accounts.service import house_account
from pms.db.models import Order, Position, SubAccount
from pms.domain.enums import LedgerKind, OrderStatus
from pms.domain.numbers import ZERO
from pms.exchange.model import TradeReport
from pms.execution import views
from pms.execution.position_math import FillEffect, apply_fill
from pms.execution.take import lock_take
from pms.messaging.events import EventType

log = structlog.get_logger(__name__)

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


def book_fill(session: Session, trade: TradeReport, source: str) -> Booked | None:
    """Book ``trade`` once. Returns None when it was already booked or is not one of ours."""
    return book_fills(session, [trade], source)[0]


def book_fills(session: Session, trades: Sequence[TradeReport], source: str) -> list[Booked | None]:
    """Book each of ``trades`` once, in the given order, in the caller's transaction: what
    :func:`book_fill` does for each, with the row locks of all of them taken up front: one
    round trip for the take (its locks and the locked rows), then two statements per fill.
    ``None`` in the answer: already booked, not one of our orders, or an order its account's
    lock did not cover (:func:`pms.execution.take.lock_take`; it stays open for order-sync).

    Locks in the path's order: the sub-accounts (by id), then the orders (by id), then the
    sub-accounts' open positions (by id); the house's only if a loss must be insured.
    """
    if not trades:
        return []
    accounts, orders, positions = lock_take(session, trades)
    by_coid = {o.client_order_id: o for o in orders}
    by_pair = {(o.symbol, o.exchange_order_id): o for o in orders}
    # From here each booking's changes go out in its one write statement.
    out: list[Booked | None] = []
    with session.no_autoflush:
        for trade in trades:
            # The trade's order: by clientOrderId, else by symbol and exchange order id.
            order = by_coid.get(trade.client_order_id or "") or by_pair.get(
                (trade.symbol, trade.exchange_order_id)
            )
            if order is None:
                out.append(None)  # not one of ours
                continue
            account = accounts[order.sub_account_id]
            out.append(
                _book_locked(
                    session, account, order, trade, source, order.leverage, positions[account.id]
                )
            )
    return out


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
    # No autoflush while booking: the order's pending changes (the caller's acknowledgement,
    # this fill) go out in the booking's one write statement. Anything else the caller left
    # pending is flushed first, as an autoflush would have.
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
    positions: list[Position] | None = None,
) -> Booked | None:
    """``positions``: the account's positions as locked by the caller, kept up to date here
    (a position this fill opens is added; one it closes keeps its ``closed_at``)."""
    if positions is None:
        positions = list(session.execute(_LOCK_OPEN_POSITIONS, {"id": account.id}).scalars())
    position = next(
        (p for p in positions if p.symbol == trade.symbol and p.closed_at is None), None
    )
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
    # What the fill changes (the order with the caller's pending acknowledgement, the
    # position, the ledger and the balance) is computed here and written in one statement.
    writes = _Writes()
    if order is not None:
        _update_order(order, trade)
        writes.update("orders", order)
    fee_usdt = trade.fee if trade.fee_asset == "USDT" else ZERO
    if trade.fee_asset != "USDT" and trade.fee:
        # Recorded on the fill (fee, fee_asset), charged to nobody: the master account paid
        # it. The streamer turns Binance's BNB fee discount off so this does not happen
        # (pms.streaming.commissions); reconciliation finds these fills by fee_asset.
        log.error(
            "commission not in USDT: recorded on the fill, not charged to the sub-account",
            subAccountId=account.id,
            tradeId=trade.trade_id,
            fee=str(trade.fee),
            feeAsset=trade.fee_asset,
        )
    position = _update_position(
        session, writes, account.id, position, trade, leverage, fee_usdt, effect
    )
    realized = effect.realized
    before = account.wallet_balance
    flat_after = position.qty == 0 and not any(
        p.closed_at is None and p.symbol != trade.symbol for p in positions
    )
    balance, shortfall = _post_pnl_and_fee(
        writes, account, realized, fee_usdt, fill_id, flat_after=flat_after
    )
    positions.extend(writes.execute(session))
    if balance != before:
        set_committed_value(account, "wallet_balance", balance)

    booked = Booked(fill_id=fill_id, sub_account_id=account.id)
    booked.events.append(
        (EventType.TRADE_FILL, account.id, views.fill_view(fill_id, order, trade, realized, source))
    )
    if order is not None:
        booked.events.append((EventType.ORDER_UPDATE, account.id, views.order_view(order)))
    booked.events.append((EventType.POSITION_UPDATE, account.id, views.position_view(position)))
    if balance != before:
        booked.events.append(
            (
                EventType.BALANCE_UPDATE,
                account.id,
                views.balance_view(account, balance - before, "fill"),
            )
        )
    if shortfall > 0:
        absorb_shortfall(
            session,
            account.id,
            shortfall,
            ref_type="fill",
            ref_id=str(fill_id),
            events=booked.events,
        )
    still_open = sorted(
        (p for p in positions if p.closed_at is None), key=lambda p: p.symbol.encode()
    )
    booked.open_positions = [views.position_view(p) for p in still_open]
    return booked


class _Writes:  # the SQL below is built from column names and aliases, never from values
    """The writes of one booking as one SQL statement (data-modifying CTEs, one round trip),
    after which the ORM copies hold what was written and nothing is left for a flush.

    ``update``: a loaded row's changed attributes (all its pending ORM changes, the caller's
    included); ``insert``: a new position row; ``ledger``: entries and the new balance.
    """

    def __init__(self) -> None:
        self._ctes: list[str] = []
        self._params: dict[str, Any] = {}
        self._updates: list[tuple[str, Order | Position, dict[str, Any]]] = []
        self._inserts: list[tuple[str, Position]] = []
        self._checks: list[str] = []

    def update(self, table: str, obj: Order | Position) -> None:
        state = instance_state(obj)
        changes = {k: state.dict[k] for k in state.committed_state if k in state.dict}
        # Identifiers in the SQL are the mapped table's own column names; values are parameters.
        assert changes.keys() <= _COLUMNS[table], "only mapped columns are written"
        if not changes:
            return
        alias = f"u{len(self._updates)}"
        sets = ", ".join(f"{col} = %({alias}_{col})s" for col in changes)
        self._ctes.append(
            f"{alias} AS (UPDATE {table} SET {sets} WHERE id = %({alias}_id)s RETURNING 1)"  # noqa: S608
        )
        self._params[f"{alias}_id"] = obj.id
        self._params.update({f"{alias}_{col}": value for col, value in changes.items()})
        self._updates.append((alias, obj, changes))
        self._checks.append(f"(SELECT count(*) FROM {alias}) = 1")  # noqa: S608

    def insert(self, position: Position) -> None:
        alias = f"i{len(self._inserts)}"
        values = {col: getattr(position, col) for col in _POSITION_INSERT_COLUMNS}
        self._ctes.append(
            f"{alias} AS (INSERT INTO positions ({', '.join(values)})"  # noqa: S608
            f" VALUES ({', '.join(f'%({alias}_{col})s' for col in values)}) RETURNING id)"
        )
        self._params.update({f"{alias}_{col}": value for col, value in values.items()})
        self._inserts.append((alias, position))

    def ledger(
        self,
        account_id: int,
        balance: Decimal,
        entries: list[tuple[str, Decimal, Decimal]],
        ref_id: str,
    ) -> None:
        rows = []
        for i, (kind, amount, after) in enumerate(entries):
            self._params |= {f"l_k{i}": kind, f"l_a{i}": amount, f"l_b{i}": after}
            rows.append(f"(%(l_account)s, %(l_k{i})s, %(l_a{i})s, %(l_b{i})s, 'fill', %(l_ref)s)")
        self._params |= {"l_account": account_id, "l_balance": balance, "l_ref": ref_id}
        self._ctes.append(
            "le AS (INSERT INTO ledger_entries"  # noqa: S608
            " (sub_account_id, kind, amount, balance_after, ref_type, ref_id)"
            f" VALUES {', '.join(rows)} RETURNING 1)"
        )
        self._ctes.append(
            "lb AS (UPDATE sub_accounts SET wallet_balance = %(l_balance)s, updated_at = now()"
            " WHERE id = %(l_account)s RETURNING 1)"
        )
        self._checks.append(f"(SELECT count(*) FROM le) = {len(entries)}")  # noqa: S608
        self._checks.append("(SELECT count(*) FROM lb) = 1")

    def execute(self, session: Session) -> list[Position]:
        """Run the statement; returns the new positions, now persistent in the session."""
        if not self._ctes:
            return []
        outputs = [f"({' AND '.join(self._checks)})" if self._checks else "true"]
        outputs += [f"(SELECT id FROM {alias})" for alias, _ in self._inserts]  # noqa: S608
        sql = f"WITH {', '.join(self._ctes)} SELECT {', '.join(outputs)}"
        row = session.connection().exec_driver_sql(sql, self._params).one()
        assert row[0], "every row the booking updates exists and was written once"
        for _, obj, changes in self._updates:
            for col, value in changes.items():
                set_committed_value(obj, col, value)
        created = []
        for (_, position), position_id in zip(self._inserts, row[1:], strict=True):
            position.id = position_id
            make_transient_to_detached(position)
            session.add(position)
            created.append(position)
        return created


_COLUMNS = {
    "orders": frozenset(Order.__table__.columns.keys()),
    "positions": frozenset(Position.__table__.columns.keys()),
}
_POSITION_INSERT_COLUMNS = (
    "sub_account_id",
    "symbol",
    "qty",
    "entry_price",
    "leverage",
    "realized_pnl",
    "fees_paid",
    "opened_at",
    "updated_at",
    "closed_at",
)


def _update_order(order: Order, trade: TradeReport) -> None:
    """The order after one more fill: filled quantity, average price, status.

    The exchange never fills more than an order's quantity, so a fill beyond ours means the
    order was amended up and we missed it (an AMENDMENT event lost, or behind the fill in the
    same take) and the trade did not say the quantity (the stream's ``q``, taken when it
    does): the quantity follows the fills, as the position does. FILLED with a
    cumulative quantity below ours means it was amended down: the quantity is what filled.
    """
    new_filled = order.filled_qty + trade.qty
    if trade.order_qty is not None and trade.order_qty >= new_filled:
        order.qty = trade.order_qty  # the exchange's quantity as of this fill
    if new_filled > order.qty:
        log.warning(
            "fill beyond the order's quantity: amended on the exchange, taking the fills",
            orderId=order.id,
            qty=str(order.qty),
            filled=str(new_filled),
        )
        order.qty = new_filled
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
    # The exchange's terminal status (the user stream's ``X``) is taken only once every fill
    # it implies is booked (``z``; FILLED implies the whole quantity): a fill the stream
    # missed keeps the order open, where order-sync finds and books it.
    if trade.order_status in TERMINAL and order.status != trade.order_status:
        implied = trade.order_filled
        if implied is None:
            implied = order.qty if trade.order_status == OrderStatus.FILLED.value else None
        if implied is not None and new_filled >= implied:
            order.status = trade.order_status
            if trade.order_status == OrderStatus.FILLED.value and order.qty > new_filled:
                order.qty = new_filled  # amended down, then filled: all of it is what filled
    if order.exchange_order_id is None:
        order.exchange_order_id = trade.exchange_order_id


def _update_position(
    session: Session,
    writes: _Writes,
    sub_account_id: int,
    position: Position | None,
    trade: TradeReport,
    leverage: int,
    fee: Decimal,
    effect: FillEffect,
) -> Position:
    """Apply the fill to the open position (the fee is charged to the row left open)."""
    if effect.flipped:
        assert position is not None
        # Close the old row (it keeps its realized PnL) before the remainder opens a new one:
        # at most one row per symbol is open, so the close is written first, on its own.
        position.realized_pnl += effect.realized
        position.updated_at = trade.traded_at
        position.qty = ZERO
        position.closed_at = trade.traded_at
        closing = _Writes()
        closing.update("positions", position)
        closing.execute(session)
        position = None
        effect = replace(effect, realized=ZERO)
    if position is None:
        new = Position(
            sub_account_id=sub_account_id,
            symbol=trade.symbol,
            qty=effect.qty,
            entry_price=effect.entry,
            realized_pnl=effect.realized,
            fees_paid=fee,
            leverage=leverage,
            opened_at=trade.traded_at,
            updated_at=trade.traded_at,
            closed_at=None,
        )
        writes.insert(new)
        return new
    position.realized_pnl += effect.realized
    position.updated_at = trade.traded_at
    if effect.qty == 0:
        position.qty = ZERO
        position.closed_at = trade.traded_at
    else:
        position.qty = effect.qty
        position.entry_price = effect.entry
    position.fees_paid += fee
    writes.update("positions", position)
    return position


def _post_pnl_and_fee(
    writes: _Writes,
    account: SubAccount,
    realized: Decimal,
    fee: Decimal,
    fill_id: int,
    *,
    flat_after: bool,
) -> tuple[Decimal, Decimal]:
    """Post the fill's realized PnL and fee in full; returns the new balance and the
    shortfall the house insures.

    A sub-account's wallet may go below zero while the account still holds positions: their
    profit may yet cover the loss, as on Binance's cross wallet, and the risk engine sees the
    equity (wallet + uPnL) either way. Once the account holds no position, whatever is still
    below zero is the house's (SPEC §5): an INSURANCE entry brings the wallet back to zero and
    the shortfall is returned for :func:`absorb_shortfall`. Paying at the first fill instead let
    a solvent account keep the house's money: close the losing leg first (insured), then the
    winning one (kept).
    """
    balance = account.wallet_balance
    entries: list[tuple[str, Decimal, Decimal]] = []
    for kind, amount in ((LedgerKind.REALIZED_PNL, realized), (LedgerKind.FEE, -fee)):
        if amount != 0:
            balance += amount
            entries.append((kind.value, amount, balance))
    shortfall = ZERO
    if balance < 0 and flat_after and not account.is_house:  # the house is the insurer
        shortfall = -balance
        balance = ZERO
        entries.append((LedgerKind.INSURANCE.value, shortfall, balance))
    if entries:
        writes.ledger(account.id, balance, entries, str(fill_id))
    return balance, shortfall


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
