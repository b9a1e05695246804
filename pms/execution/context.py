"""Build the risk checks' view of a sub-account (``RiskContext``) from Postgres and prices.

Called under the sub-account's row lock, so what the checks see is what the order will be
judged against: open orders (including intents not yet acknowledged) reserve margin, which is
what stops concurrent orders from many workers overspending one sub-account.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from decimal import Decimal
from typing import Any, Protocol

from sqlalchemy import any_, select
from sqlalchemy.orm import Session

from pms.accounts.ledger import AccountRow, account_not_found
from pms.db import prepared
from pms.db.models import Order, Position, RiskRules
from pms.db.params import any_of, bigint_array
from pms.domain.enums import AccountStatus, OrderStatus, Side, Tier
from pms.domain.instrument import Instrument
from pms.risk.context import Quote, RiskContext
from pms.risk.context import RiskRules as RulesView
from pms.risk.snapshot import OpenOrder, RiskPosition
from pms.risk.tiers import TierThresholds

OPEN_STATUSES = [s.value for s in OrderStatus if s.is_open]
# The working orders' filter as SQL: the partial index's own predicate (ix_orders_open), so a
# prepared statement's generic plan still uses it (with a parameter in its place, the generic
# plan cannot prove the index applies and reads every order of the account).
OPEN_STATUSES_SQL = ", ".join(f"'{status}'" for status in OPEN_STATUSES)


class _Ratios(Protocol):
    """Where the tier thresholds come from: a ``RiskRules`` row, ORM entity or columns."""

    @property
    def warning_ratio(self) -> Decimal: ...
    @property
    def restricted_ratio(self) -> Decimal: ...
    @property
    def adl1_ratio(self) -> Decimal: ...
    @property
    def adl2_ratio(self) -> Decimal: ...
    @property
    def liquidation_ratio(self) -> Decimal: ...


def thresholds_of(rules: _Ratios) -> TierThresholds:
    return TierThresholds(
        warning=rules.warning_ratio,
        restricted=rules.restricted_ratio,
        adl1=rules.adl1_ratio,
        adl2=rules.adl2_ratio,
        liquidation=rules.liquidation_ratio,
    )


def rules_view(rules: RiskRules) -> RulesView:
    return RulesView(
        max_leverage=rules.max_leverage,
        max_notional_per_symbol=rules.max_notional_per_symbol,
        max_exposure_multiple=rules.max_exposure_multiple,
        price_band_bps=rules.price_band_bps,
        max_orders_per_window=rules.max_orders_per_minute,
        thresholds=thresholds_of(rules),
    )


# Built once and rendered once (the risk monitor runs them after every booking); run on the
# session's connection (Core: rows of columns, none of the ORM's per-statement work).
_OPEN_POSITIONS_OF = select(
    Position.sub_account_id, Position.symbol, Position.qty, Position.entry_price, Position.leverage
).where(Position.sub_account_id == any_(bigint_array("ids")), Position.closed_at.is_(None))
_OPEN_ORDERS_OF = (
    select(
        Order.sub_account_id,
        Order.symbol,
        Order.side,
        Order.qty,
        Order.filled_qty,
        Order.price,
        Order.leverage,
        Order.reduce_only,
    )
    .where(
        Order.sub_account_id == any_(bigint_array("ids")),
        Order.status == any_of(OPEN_STATUSES),
    )
    .order_by(Order.id)
)


def open_positions(session: Session, sub_account_id: int) -> dict[str, RiskPosition]:
    return open_positions_of(session, [sub_account_id]).get(sub_account_id, {})


def open_positions_of(session: Session, ids: list[int]) -> dict[int, dict[str, RiskPosition]]:
    """The open positions of these sub-accounts (one query), by sub-account and symbol."""
    rows = session.connection().execute(_OPEN_POSITIONS_OF, {"ids": ids})
    out: dict[int, dict[str, RiskPosition]] = {}
    for sub_account_id, sym, qty, entry, lev in rows:
        out.setdefault(sub_account_id, {})[sym] = RiskPosition(
            symbol=sym, qty=qty, entry=entry, leverage=lev
        )
    return out


def open_orders(session: Session, sub_account_id: int) -> list[OpenOrder]:
    return open_orders_of(session, [sub_account_id]).get(sub_account_id, [])


def open_orders_of(session: Session, ids: list[int]) -> dict[int, list[OpenOrder]]:
    """The working orders of these sub-accounts (one query, by order id), by sub-account."""
    rows = session.connection().execute(_OPEN_ORDERS_OF, {"ids": ids})
    out: dict[int, list[OpenOrder]] = {}
    for sub_account_id, sym, side, qty, filled, price, lev, ro in rows:
        if qty > filled:
            out.setdefault(sub_account_id, []).append(
                OpenOrder(
                    symbol=sym,
                    side=Side(side),
                    qty=qty - filled,
                    price=price,
                    leverage=lev,
                    reduce_only=ro,
                )
            )
    return out


# The sub-account's row lock and everything the checks read, in one round trip. Postgres runs
# the statements of one simple-query message in order, each with a snapshot of its own (READ
# COMMITTED), so the context query starts once the lock is granted and sees every intent
# committed before that, as if it had been sent after the lock's reply (tested in
# tests/trading/test_order_context.py). Numbers travel as text inside the JSON arrays so they
# come back as exact Decimals. It also draws the id a new intent will take (an id drawn for an
# order the checks refuse is simply never used) and the transaction's now(), the intent row's
# created_at: the intent's INSERT then needs no RETURNING and goes out with its COMMIT. The
# order-rate window is on the same clock as the created_at it counts: the database's.
_LOCK_ACCOUNT_SQL = "SELECT 1 FROM sub_accounts WHERE id = %(a)s FOR UPDATE;\n"
_ORDER_CONTEXT = prepared.register(
    "pms_order_context",
    f"""
SELECT s.id, s.owner_user_id, s.is_house, s.status, s.wallet_balance, s.tier,
  r.max_leverage, r.max_notional_per_symbol, r.max_exposure_multiple, r.price_band_bps,
  r.max_orders_per_minute, r.warning_ratio, r.restricted_ratio, r.adl1_ratio, r.adl2_ratio,
  r.liquidation_ratio,
  (SELECT count(*) FROM orders
    WHERE sub_account_id = %(a)s AND created_at >= now() - interval '1 minute') AS recent,
  (SELECT json_agg(json_build_array(symbol, leverage)) FROM symbol_leverage
    WHERE sub_account_id = %(a)s) AS leverages,
  (SELECT json_agg(json_build_array(symbol, side, qty::text, filled_qty::text, price::text,
      leverage, reduce_only))
    FROM orders WHERE sub_account_id = %(a)s AND status IN ({OPEN_STATUSES_SQL})) AS open_orders,
  (SELECT json_agg(json_build_array(symbol, qty::text, entry_price::text, leverage))
    FROM positions WHERE sub_account_id = %(a)s AND closed_at IS NULL) AS positions,
  (SELECT id FROM orders WHERE request_id = %(rid)s AND sub_account_id = %(a)s
    AND status <> %(rejected)s ORDER BY id LIMIT 1) AS existing,
  nextval('orders_id_seq') AS next_id, now() AS tx_now
FROM sub_accounts s JOIN risk_rules r ON r.sub_account_id = s.id WHERE s.id = %(a)s
""",  # noqa: S608 (the statuses are the enum's own values, no input)
    {"a": "bigint", "rid": "text", "rejected": "text"},
)


@dataclass(frozen=True, slots=True)
class LockedAccount:
    """The locked sub-account's columns that an order's checks read (an :class:`AccountRow`)."""

    id: int
    owner_user_id: str
    is_house: bool
    status: str
    wallet_balance: Decimal
    tier: str


@dataclass(slots=True)
class OrderContextRows:
    """What :func:`lock_and_read_order_context` read: the inputs of :func:`context_from_rows`."""

    rules: RulesView
    recent: int
    leverages: dict[str, int]
    open_orders: list[OpenOrder]
    positions: dict[str, RiskPosition]
    existing_order_id: int | None
    next_order_id: int
    now: datetime


def _dec(value: str | None) -> Decimal | None:
    return None if value is None else Decimal(value)


def open_orders_from_json(rows: list[list[Any]] | None) -> list[OpenOrder]:
    """The working orders of a ``json_agg(json_build_array(symbol, side, qty::text,
    filled_qty::text, price::text, leverage, reduce_only))``: what is left to fill of each."""
    out: list[OpenOrder] = []
    for sym, side, qty_s, filled_s, price_s, lev, ro in rows or ():
        qty, filled = Decimal(qty_s), Decimal(filled_s)
        if qty > filled:
            out.append(
                OpenOrder(
                    symbol=sym,
                    side=Side(side),
                    qty=qty - filled,
                    price=_dec(price_s),
                    leverage=lev,
                    reduce_only=ro,
                )
            )
    return out


def positions_from_json(rows: list[list[Any]] | None) -> dict[str, RiskPosition]:
    """The open positions of a ``json_agg(json_build_array(symbol, qty::text,
    entry_price::text, leverage))``, by symbol."""
    return {
        sym: RiskPosition(symbol=sym, qty=Decimal(qty_s), entry=Decimal(entry_s), leverage=lev)
        for sym, qty_s, entry_s, lev in rows or ()
    }


def lock_and_read_order_context(
    session: Session, sub_account_id: int, request_id: str | None
) -> tuple[LockedAccount, OrderContextRows]:
    """Lock the sub-account's row (held until the transaction ends) and read its columns,
    rules, recent order count, leverages, open orders, open positions and the live intent of
    ``request_id`` (a previous delivery): one round trip. NotFound if there is no such
    sub-account."""
    row = _ORDER_CONTEXT.execute(
        session.connection(),
        {
            "a": sub_account_id,
            "rid": request_id,
            "rejected": OrderStatus.REJECTED.value,
        },
        before=_LOCK_ACCOUNT_SQL,
    ).one_or_none()
    if row is None:  # every sub-account has a risk_rules row: no row, no sub-account
        raise account_not_found(sub_account_id)
    account = LockedAccount(
        id=row[0],
        owner_user_id=row[1],
        is_house=row[2],
        status=row[3],
        wallet_balance=row[4],
        tier=row[5],
    )
    rules = RulesView(
        max_leverage=row[6],
        max_notional_per_symbol=row[7],
        max_exposure_multiple=row[8],
        price_band_bps=row[9],
        max_orders_per_window=row[10],
        thresholds=TierThresholds(
            warning=row[11], restricted=row[12], adl1=row[13], adl2=row[14], liquidation=row[15]
        ),
    )
    open_orders_ = open_orders_from_json(row[18])
    positions = positions_from_json(row[19])
    return account, OrderContextRows(
        rules=rules,
        recent=int(row[16]),
        leverages={sym: lev for sym, lev in row[17] or ()},
        open_orders=open_orders_,
        positions=positions,
        existing_order_id=row[20],
        next_order_id=row[21],
        now=row[22],
    )


def context_from_rows(
    account: AccountRow,
    rows: OrderContextRows,
    instruments: dict[str, Instrument],
    marks: dict[str, Decimal],
    quotes: dict[str, Quote],
) -> RiskContext:
    return RiskContext(
        status=AccountStatus(account.status),
        wallet=account.wallet_balance,
        rules=rows.rules,
        positions=rows.positions,
        marks=marks,
        instruments=instruments,
        open_orders=rows.open_orders,
        recent_order_count=rows.recent,
        tier=Tier(account.tier),
        quotes=quotes,
        leverages=rows.leverages,
    )
