"""Concurrent deposits and withdrawals from several processes and threads stay exact."""

import multiprocessing as mp
from concurrent.futures import ThreadPoolExecutor
from decimal import Decimal

from sqlalchemy.orm import Session, sessionmaker

from pms.accounts import service
from pms.accounts.ledger import ledger_sum
from pms.config import load_settings
from pms.db.session import make_engine, make_session_factory, unit_of_work
from pms.errors import InsufficientMargin
from tests.factories import funded_account

PROCESSES = 4
THREADS = 4
OPS_PER_THREAD = 15


def _hammer(database_url: str, account_id: int, seed: int) -> tuple[int, int]:
    """Each op: deposit 1.5 or withdraw 2; returns (deposits, withdrawals) that succeeded."""
    settings = load_settings(database_url=database_url)
    engine = make_engine(settings, pool_size=THREADS)
    factory = make_session_factory(engine)

    def worker(t: int) -> tuple[int, int]:
        dep = wd = 0
        for i in range(OPS_PER_THREAD):
            try:
                with unit_of_work(factory) as s:
                    if (seed + t + i) % 3 == 0:
                        service.deposit(s, account_id, Decimal("1.5"))
                        dep += 1
                    else:
                        service.withdraw(s, account_id, Decimal("2"))
                        wd += 1
            except InsufficientMargin:
                pass
        return dep, wd

    with ThreadPoolExecutor(THREADS) as pool:
        results = list(pool.map(worker, range(THREADS)))
    engine.dispose()
    return sum(r[0] for r in results), sum(r[1] for r in results)


def test_many_processes_and_threads_never_lose_or_overdraw(
    session_factory: sessionmaker[Session], database_url: str
) -> None:
    account_id, _ = funded_account(session_factory, "40")
    ctx = mp.get_context("spawn")
    with ctx.Pool(PROCESSES) as pool:
        results = pool.starmap(_hammer, [(database_url, account_id, p) for p in range(PROCESSES)])
    deposits = sum(r[0] for r in results)
    withdrawals = sum(r[1] for r in results)
    assert withdrawals > 0 and deposits > 0
    expected = Decimal("40") + Decimal("1.5") * deposits - Decimal("2") * withdrawals
    with unit_of_work(session_factory) as s:
        assert service.get_account(s, account_id).wallet_balance == expected
        assert ledger_sum(s, account_id) == expected
        assert expected >= 0
