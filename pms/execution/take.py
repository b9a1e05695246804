"""The take of a fill booking: what booking a set of trades touches, locked and loaded in one
round trip (:func:`lock_take`, used by :func:`pms.execution.booking.book_fills`).

One simple-query message: three prepared lock statements in the path's order (the trades'
sub-accounts, their orders, those accounts' open positions, each by id), then one read of the
locked rows as JSON text. Postgres runs a message's statements in order, each with a snapshot
of its own (READ COMMITTED), so the read starts once every lock is granted and sees each row as
locked. The rows become the session's copies as ``populate_existing`` loads them.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Sequence
from datetime import datetime
from decimal import Decimal
from typing import Any, TypeVar

from sqlalchemy.orm import Session, make_transient_to_detached
from sqlalchemy.orm.attributes import set_committed_value
from sqlalchemy.orm.util import identity_key

from pms.db import prepared
from pms.db.models import Order, Position, SubAccount
from pms.exchange.model import TradeReport

_Row = TypeVar("_Row", SubAccount, Order, Position)


def lock_take(
    session: Session, trades: Sequence[TradeReport]
) -> tuple[dict[int, SubAccount], list[Order], dict[int, list[Position]]]:
    """Lock and load, in one round trip, what booking ``trades`` touches: their orders (by
    clientOrderId, or by symbol and exchange order id), those orders' sub-accounts (by id) and
    those accounts' open positions (by account, each list by id). An order found only after
    its account's lock was taken (its exchange order id committed meanwhile) is left out: its
    account is not held. What the caller left pending
    is flushed first, as an autoflush would; the rows come back as the session's copies,
    overwritten with the rows as locked (``populate_existing``)."""
    pairs = sorted({(t.symbol, t.exchange_order_id) for t in trades})
    keys = {
        "coids": sorted({t.client_order_id for t in trades if t.client_order_id}),
        "pair_symbols": [symbol for symbol, _ in pairs],
        "pair_ids": [order_id for _, order_id in pairs],
    }
    session.flush()
    accounts_json, orders_json, positions_json = _TAKE_ROWS.execute(
        session.connection(), keys, before=_TAKE_LOCKS
    ).one()
    accounts = {a.id: a for a in _install(session, SubAccount, accounts_json)}
    positions: dict[int, list[Position]] = {i: [] for i in sorted(accounts)}
    for position in _install(session, Position, positions_json):
        positions[position.sub_account_id].append(position)
    orders = _install(session, Order, orders_json)
    return accounts, orders, positions


# A take's rows: its trades' orders, found by clientOrderId or by symbol and exchange order
# id (order-sync's trades: the pairs go as two arrays, zipped by unnest), their sub-accounts
# and those accounts' open positions. The orders are found through their two unique indexes,
# one arm each: an OR of the two in one WHERE cannot use them and reads the whole table.
_TRADE_ORDERS = """(SELECT id FROM orders WHERE client_order_id = ANY(%(coids)s::text[])
  UNION SELECT o.id FROM orders o
    JOIN unnest(%(pair_symbols)s::text[], %(pair_ids)s::text[]) AS t(symbol, order_id)
    ON o.symbol = t.symbol AND o.exchange_order_id = t.order_id)"""
# The accounts the first statement locked, as it left them in a setting of the transaction.
# Each later statement has a snapshot of its own and may find more orders of the trades (an
# exchange order id committed while the first one waited for a lock): restricted to the
# locked accounts, what the take locks and reads is only what the accounts' locks cover.
_HELD = "string_to_array(current_setting('pms.take_accounts', true), ',')::bigint[]"
_TAKE_TYPES = {"coids": "text[]", "pair_symbols": "text[]", "pair_ids": "text[]"}
# The locks, one statement each, in the path's order (sub-accounts, orders, positions, each by
# id; the house, whose id is the lowest, after the other sub-accounts, as every path that
# insures a shortfall takes it); they travel in one message with the read that follows them.
_TAKE_LOCKS = (
    prepared.register(
        "pms_take_lock_accounts",
        f"""SELECT set_config('pms.take_accounts', coalesce(
  (SELECT string_agg(id::text, ',') FROM
    (SELECT id FROM sub_accounts WHERE id IN
      (SELECT sub_account_id FROM orders WHERE id IN {_TRADE_ORDERS})
     ORDER BY is_house, id FOR UPDATE) AS locked), ''), true)""",  # noqa: S608
        _TAKE_TYPES,
    ),
    prepared.register(
        "pms_take_lock_orders",
        f"""SELECT 1 FROM orders WHERE id IN {_TRADE_ORDERS} AND sub_account_id = ANY({_HELD})
  ORDER BY id FOR UPDATE""",  # noqa: S608
        _TAKE_TYPES,
    ),
    prepared.register(
        "pms_take_lock_positions",
        f"""SELECT 1 FROM positions WHERE closed_at IS NULL AND sub_account_id = ANY({_HELD})
  ORDER BY id FOR UPDATE""",  # noqa: S608
        {},
    ),
)
# Read once the locks are held (a statement of its own: it sees every row as locked), whole
# rows as JSON text (numbers exact, see _install).
_TAKE_ROWS = prepared.register(
    "pms_take_rows",
    f"""SELECT
  (SELECT json_agg(a ORDER BY a.id)::text FROM sub_accounts a WHERE a.id = ANY({_HELD})),
  (SELECT json_agg(o ORDER BY o.id)::text FROM orders o
    WHERE o.id IN {_TRADE_ORDERS} AND o.sub_account_id = ANY({_HELD})),
  (SELECT json_agg(p ORDER BY p.id)::text FROM positions p
    WHERE p.closed_at IS NULL AND p.sub_account_id = ANY({_HELD}))""",  # noqa: S608
    _TAKE_TYPES,
)


def _converters(model: type[Any]) -> dict[str, Callable[[Any], Any]]:
    def decimal(value: Any) -> Any:
        return value if value is None or isinstance(value, Decimal) else Decimal(value)

    def timestamp(value: Any) -> Any:
        return None if value is None else datetime.fromisoformat(value)

    out: dict[str, Callable[[Any], Any]] = {}
    for column in model.__table__.columns:
        python_type = column.type.python_type
        if python_type is Decimal:
            out[column.key] = decimal
        elif python_type is datetime:
            out[column.key] = timestamp
    return out


_CONVERT = {model: _converters(model) for model in (SubAccount, Order, Position)}


def _install(session: Session, model: type[_Row], rows_json: str | None) -> list[_Row]:
    """The rows of a ``json_agg`` (text) as the session's copies, as ``populate_existing``
    loads them: a copy already in the session is overwritten with the row as locked, any
    other becomes persistent. Numbers are parsed as Decimal (a ``numeric`` is written out in
    full, its scale included, as psycopg2 reads it), timestamps with their offset."""
    if rows_json is None:
        return []
    convert = _CONVERT[model]
    out: list[_Row] = []
    for values in json.loads(rows_json, parse_float=Decimal):
        for key, to_python in convert.items():
            values[key] = to_python(values[key])
        existing = session.identity_map.get(identity_key(model, values["id"]))
        if existing is None:
            obj = model(**values)
            make_transient_to_detached(obj)
            session.add(obj)
        else:
            obj = existing
            for key, value in values.items():
                set_committed_value(obj, key, value)
        out.append(obj)
    return out
