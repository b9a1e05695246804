"""A worker's warm-up (pms.warmup): connections opened, the hot paths' statements compiled
for the engine, and nothing written."""

from __future__ import annotations

from collections.abc import Iterator
from decimal import Decimal

import pytest
from sqlalchemy import text

from pms import warmup
from pms.accounts.ledger import lock_account
from pms.app import App, build_app
from pms.config import Settings
from pms.execution.context import open_orders_of, open_positions_of
from pms.riskengine.books import load_books
from pms.riskengine.enforce import RiskEnforcer
from tests.support import statements_on

NO_ACCOUNT = 10**12  # an id no sub-account has
WRITES = ("INSERT", "UPDATE", "DELETE")
TABLES = ("orders", "fills", "positions", "ledger_entries", "liquidation_events", "requests")


@pytest.fixture
def fresh(sim_settings: Settings) -> Iterator[App]:
    """An engine graph as a worker process builds it: nothing opened, nothing compiled."""
    built = build_app(sim_settings, db_pool=6)
    yield built
    built.close()


def _counts(app: App) -> dict[str, int]:
    with app.db.connect() as conn:
        return {t: conn.execute(text(f"SELECT count(*) FROM {t}")).scalar_one() for t in TABLES}


def test_warm_up_opens_connections_compiles_the_reads_and_writes_nothing(fresh: App) -> None:
    before = _counts(fresh)
    with statements_on(fresh.db) as statements:
        warmup.warm_database(fresh, connections=4)
        RiskEnforcer(fresh).enforce(warmup.NO_SUCH_ID, "warm-up")
    assert fresh.db.pool.checkedin() >= 4  # opened, and back in the pool
    assert statements, "the reads ran"
    assert not [s for s in statements if s.lstrip().upper().startswith(WRITES)], statements
    assert _counts(fresh) == before


def test_after_warm_up_the_real_reads_compile_nothing(fresh: App, trader) -> None:
    """The rehearsal compiles what a real account's reads use: the same statements, the same
    cache entries (an id list of another length renders the same ANY(array) text)."""
    t = trader("1000")
    warmup.warm_database(fresh, connections=1)
    cache = fresh.db._compiled_cache
    assert cache is not None
    compiled = len(cache)
    assert compiled > 0
    session = fresh.sessions()
    try:
        account = lock_account(session, t.sub_account_id)
        assert account.wallet_balance == Decimal("1000")
        assert set(load_books(session, [t.sub_account_id, NO_ACCOUNT])) == {t.sub_account_id}
        open_positions_of(session, [t.sub_account_id])
        open_orders_of(session, [t.sub_account_id])
    finally:
        session.rollback()
        session.close()
    assert len(cache) == compiled  # every statement came from the cache
