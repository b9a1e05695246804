"""The hot path's prepared statements touch rows in proportion to what they answer, never to
an account's history: each runs (``EXPLAIN ANALYZE``, custom and generic plans) against a
sub-account with tens of thousands of old orders, fills, ledger entries and closed positions,
and every scan of those tables may read only a handful of rows. Counted, not timed."""

from __future__ import annotations

import json
import uuid
from collections.abc import Iterator
from typing import Any

import pytest
from sqlalchemy import Connection, create_engine, text

import pms.execution.context
import pms.execution.take
import pms.riskengine.books  # noqa: F401  (each registers its prepared statements)
from pms.config import load_settings
from pms.db import migrate, prepared
from tests.conftest import create_database, drop_database

HISTORY = 30_000  # old orders (and as many fills, ledger entries, requests) of one account
OTHERS = 200  # sub-accounts with 50 orders each
GROWING = {"orders", "fills", "ledger_entries", "positions", "requests"}
MAX_ROWS_READ = 50  # per scan of a growing table, filtered rows included

_POPULATE = """
INSERT INTO sub_accounts (name, owner_user_id, wallet_balance) VALUES ('busy', 'u-busy', 1000);
INSERT INTO risk_rules (sub_account_id) SELECT id FROM sub_accounts WHERE name = 'busy';
INSERT INTO orders (client_order_id, sub_account_id, symbol, side, type, qty, leverage, status,
  filled_qty, exchange_order_id, request_id, created_at, updated_at)
SELECT 'pms-h' || g, s.id, 'BTC/USDT:USDT', 'BUY', 'MARKET', 1, 10, 'FILLED', 1, 'h' || g,
  'r-h' || g, now() - interval '1 day' - g * interval '3 minutes', now()
FROM generate_series(1, :history) g, sub_accounts s WHERE s.name = 'busy';
INSERT INTO orders (client_order_id, sub_account_id, symbol, side, type, qty, leverage, status,
  filled_qty, exchange_order_id, request_id)
SELECT 'pms-n' || g, s.id, 'BTC/USDT:USDT', 'BUY', 'LIMIT', 1, 10, 'NEW', 0, 'n' || g, 'r-n' || g
FROM generate_series(1, 3) g, sub_accounts s WHERE s.name = 'busy';
INSERT INTO sub_accounts (name, owner_user_id, wallet_balance)
SELECT 'other-' || g, 'u-other', 100 FROM generate_series(1, :others) g;
INSERT INTO orders (client_order_id, sub_account_id, symbol, side, type, qty, leverage, status,
  filled_qty, exchange_order_id, request_id, created_at, updated_at)
SELECT 'pms-o' || s.id || '-' || g, s.id, 'ETH/USDT:USDT', 'SELL', 'MARKET', 1, 10, 'FILLED', 1,
  'o' || s.id || '-' || g, 'r-o' || s.id || '-' || g, now() - g * interval '1 hour', now()
FROM generate_series(1, 50) g, sub_accounts s WHERE s.name LIKE 'other-%';
INSERT INTO fills (sub_account_id, order_id, symbol, exchange_trade_id, side, qty, price, fee,
  fee_asset, realized_pnl, is_maker, source, traded_at)
SELECT o.sub_account_id, o.id, o.symbol, 't' || o.id, 'BUY', 1, 100, 0.1, 'USDT', 0, false,
  'stream', o.created_at
FROM orders o WHERE o.status = 'FILLED';
INSERT INTO ledger_entries (sub_account_id, kind, amount, balance_after, ref_type, ref_id)
SELECT sub_account_id, 'FEE', -0.1, 1000, 'fill', id::text FROM fills;
INSERT INTO positions (sub_account_id, symbol, qty, entry_price, leverage, opened_at,
  updated_at, closed_at)
SELECT s.id, 'BTC/USDT:USDT', 0, 100, 10, now() - g * interval '1 hour', now(),
  now() - g * interval '1 hour'
FROM generate_series(1, :history / 3) g, sub_accounts s WHERE s.name = 'busy';
INSERT INTO positions (sub_account_id, symbol, qty, entry_price, leverage, opened_at, updated_at)
SELECT id, 'BTC/USDT:USDT', 1, 100, 10, now(), now() FROM sub_accounts WHERE name = 'busy';
INSERT INTO requests (request_id, actor, user_id, payload_hash)
SELECT request_id, 'place_market_order', 'u-busy', 'h' FROM orders;
ANALYZE;
"""


@pytest.fixture(scope="module")
def busy_db() -> Iterator[tuple[Connection, int]]:
    name = f"pms_plans_{uuid.uuid4().hex[:8]}"
    url = create_database(name)
    engine = create_engine(url)
    try:
        migrate.upgrade(load_settings(database_url=url))
        with engine.connect() as conn:
            for statement in _POPULATE.split(";\n"):
                if statement.strip():
                    conn.execute(text(statement), {"history": HISTORY, "others": OTHERS})
            conn.commit()
            busy = conn.execute(text("SELECT id FROM sub_accounts WHERE name = 'busy'")).scalar()
            assert busy is not None
            yield conn, busy
    finally:
        engine.dispose()
        drop_database(name)


def _arguments(busy: int) -> dict[str, Any]:
    """A value for every parameter name the registered statements use: the busy account's
    newest order and an order of its history, as a trade or a request would name them."""
    return {
        "a": busy,
        "ids": [busy],
        "since": "now() - interval '1 minute'",
        "rid": "r-n1",
        "rejected": "REJECTED",
        "coids": ["pms-n1"],
        "pair_symbols": ["BTC/USDT:USDT"],
        "pair_ids": ["h1"],
    }


def _literal(value: Any, type_: str) -> str:
    if isinstance(value, list):
        items = ", ".join(_literal(v, type_.removesuffix("[]")) for v in value)
        return f"ARRAY[{items}]::{type_}"
    if isinstance(value, int):
        return f"{value}::{type_}"
    assert isinstance(value, str)
    if value.startswith("now()"):
        return f"({value})::{type_}"
    return "'" + value.replace("'", "''") + f"'::{type_}"


def _scans(node: dict[str, Any]) -> Iterator[dict[str, Any]]:
    if "Relation Name" in node:
        yield node
    for child in node.get("Plans", ()):
        yield from _scans(child)


def _rows_read(node: dict[str, Any]) -> int:
    per_loop = (
        node.get("Actual Rows", 0)
        + node.get("Rows Removed by Filter", 0)
        + node.get("Rows Removed by Index Recheck", 0)
    )
    return int(per_loop * node.get("Actual Loops", 1))


@pytest.mark.parametrize("mode", ["force_custom_plan", "force_generic_plan"])
@pytest.mark.parametrize("name", sorted(prepared._REGISTRY))
def test_a_hot_statement_reads_what_it_answers_not_the_history(
    busy_db: tuple[Connection, int], name: str, mode: str
) -> None:
    conn, busy = busy_db
    statement = prepared._REGISTRY[name]
    values = _arguments(busy)
    missing = set(statement.types) - set(values)
    assert not missing, f"{name}: give the plan test a value for {sorted(missing)}"
    args = ", ".join(_literal(values[n], t) for n, t in statement.types.items())
    raw = conn.connection.dbapi_connection
    assert raw is not None
    cursor = raw.cursor()
    try:
        cursor.execute(statement.prepare_sql)
        cursor.execute(f"SET plan_cache_mode = {mode}")
        # What the take's first statement leaves for the ones after it (pms.execution.take).
        cursor.execute("SELECT set_config('pms.take_accounts', %s, true)", (str(busy),))
        call = f"EXECUTE {name} ({args})" if args else f"EXECUTE {name}"
        cursor.execute(f"EXPLAIN (ANALYZE, FORMAT JSON) {call}")
        row = cursor.fetchone()
        assert row is not None
        plan = row[0]
    finally:
        raw.rollback()  # the locks and the setting go with it
        cursor.execute("DEALLOCATE ALL")
        raw.commit()
        cursor.close()
    if isinstance(plan, str):
        plan = json.loads(plan)
    scans = [n for n in _scans(plan[0]["Plan"]) if n["Relation Name"] in GROWING]
    assert scans, f"{name} reads none of {sorted(GROWING)}?"
    for scan in scans:
        read = _rows_read(scan)
        assert read <= MAX_ROWS_READ, (
            f"{name} ({mode}): {scan['Node Type']} on {scan['Relation Name']} read {read} rows"
            f" of an account with {HISTORY} orders in its history"
        )
