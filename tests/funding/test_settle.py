"""Funding settlement end to end: the simulator settles funding on the master account, and
``settle_funding`` shares it out to the sub-accounts' ledgers, exactly once, on a database of
its own (holdings are summed over every account in it)."""

from __future__ import annotations

import threading
import time
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from decimal import Decimal

import pytest
from sqlalchemy import select

from pms.app import App, build_app
from pms.clock import TestClock
from pms.commands import schemas as cmd
from pms.config import Settings
from pms.db import migrate
from pms.db.models import FundingSettlement, LedgerEntry, Position, SubAccount
from pms.db.session import unit_of_work
from pms.exchange.model import FundingRate
from pms.funding.settle import (
    SETTLE_AFTER,
    FundingReport,
    IncomeNotYetSeen,
    due,
    settle_funding,
    settle_one,
)
from pms.sim.runner import SimServer
from tests.conftest import create_database, drop_database
from tests.factories import new_user
from tests.trading.conftest import BTC, Trader

D = Decimal


@pytest.fixture(scope="module")
def sim() -> Iterator[SimServer]:
    with SimServer(seed=13, symbols=("BTCUSDT", "ETHUSDT"), paused=True) as server:
        yield server


@pytest.fixture(scope="module")
def clock() -> TestClock:
    return TestClock(datetime.now(UTC))


@pytest.fixture(scope="module")
def app(settings: Settings, sim: SimServer, clock: TestClock) -> Iterator[App]:
    name = f"pms_funding_{uuid.uuid4().hex[:8]}"
    url = create_database(name)
    own = settings.model_copy(
        update={
            "database_url": url,
            "sim_url": sim.url,
            "sim_api_key": sim.api_key,
            "redis_prefix": f"{settings.redis_prefix}{name}:",
        }
    )
    migrate.upgrade(own)
    built = build_app(own, clock=clock)
    yield built
    built.close()
    drop_database(name)


@pytest.fixture(autouse=True)
def _btc_at_60000(sim: SimServer) -> None:
    sim.admin("/sim/price", {"symbol": "BTCUSDT", "price": "60000"})
    sim.admin("/sim/funding", {"symbol": "BTCUSDT", "rate": "0.0001"})


def trader(app: App, qty: str, side: str) -> Trader:
    t = Trader(app, new_user())
    t.sub_account_id = t.send(
        "create_sub_account", (cmd.CreateSubAccount, app.accounts.create), name="f"
    )["data"]["subAccountId"]
    t.send(
        "deposit", (cmd.Deposit, app.accounts.deposit), subAccountId=t.sub_account_id, amount="5000"
    )
    if qty != "0":
        trade(t, side, qty)
    return t


def trade(t: Trader, side: str, qty: str) -> None:
    done = t.send(
        "place_market_order",
        (cmd.PlaceMarketOrder, t.app.orders.place_market),
        subAccountId=t.sub_account_id,
        symbol=BTC,
        side=side,
        qty=qty,
        leverage=10,
    )
    assert done["ok"], done


def funding_entries(app: App, sub: int) -> list[tuple[str, Decimal]]:
    with unit_of_work(app.sessions) as s:
        rows = s.execute(
            select(LedgerEntry.ref_type, LedgerEntry.amount)
            .where(LedgerEntry.sub_account_id == sub, LedgerEntry.kind == "FUNDING")
            .order_by(LedgerEntry.id)
        )
        return [(r, a) for r, a in rows]


def wallets(app: App) -> Decimal:
    with unit_of_work(app.sessions) as s:
        return sum(s.execute(select(SubAccount.wallet_balance)).scalars(), start=D(0))


def master_wallet(sim: SimServer) -> Decimal:
    return D(sim.admin("/sim/state")["balances"]["USDT"])


def settle_on_the_exchange(sim: SimServer) -> int:
    """The exchange's funding, now; its funding time (ms)."""
    return int(sim.admin("/sim/funding/settle", {})["fundingTime"])


def later(clock: TestClock) -> None:
    """Past the settlement delay: fills traded before a funding time are booked by then."""
    clock.advance(SETTLE_AFTER.total_seconds() + 1)


def settle(app: App) -> FundingReport:
    """The scheduler's run, for fundings the simulator settles minutes apart (Binance's come
    an hour or more apart: a symbol settled less than that ago is not asked about)."""
    return settle_funding(app, min_interval=timedelta(0))


def test_each_holder_pays_or_receives_on_its_position_and_the_wallets_follow_the_master(
    app: App, sim: SimServer, clock: TestClock
) -> None:
    long_ = trader(app, "0.5", "BUY")
    short = trader(app, "0.2", "SELL")
    flat = trader(app, "0", "BUY")
    before_books, before_master = wallets(app), master_wallet(sim)

    settle_on_the_exchange(sim)  # master net long 0.3 at 60,000: charged 1.8
    later(clock)
    report = settle(app)

    assert report.errors == []
    [settled] = report.settled
    assert (settled["exchangeAmount"], settled["allocated"], settled["houseResidual"]) == (
        "-1.8",
        "-1.8",
        "0",
    )
    assert funding_entries(app, long_.sub_account_id) == [("funding", D("-3"))]
    assert funding_entries(app, short.sub_account_id) == [("funding", D("1.2"))]
    assert funding_entries(app, flat.sub_account_id) == []
    assert wallets(app) - before_books == master_wallet(sim) - before_master == D("-1.8")

    again = settle(app)
    assert again.settled == [] and again.errors == []
    assert funding_entries(app, long_.sub_account_id) == [("funding", D("-3"))], "once"

    events = [
        e
        for _, e in app.events.read("0", count=100_000)
        if e["type"] == "balance_update" and e["data"].get("reason") == "funding"
    ]
    assert {(e["subAccountId"], e["data"]["change"]) for e in events} >= {
        (long_.sub_account_id, "-3"),
        (short.sub_account_id, "1.2"),
    }

    for t, side, qty in ((long_, "SELL", "0.5"), (short, "BUY", "0.2")):
        trade(t, side, qty)  # flat again for the next test


def test_the_position_held_at_the_funding_time_pays_not_the_one_held_now(
    app: App, sim: SimServer, clock: TestClock
) -> None:
    """Closed after the funding time but before the settlement ran: still charged on the
    0.4 it held then. Opened after it: nothing."""
    early = trader(app, "0.4", "BUY")
    settle_on_the_exchange(sim)
    trade(early, "SELL", "0.4")  # traded after the funding time
    late = trader(app, "0.4", "BUY")

    later(clock)
    report = settle(app)

    assert report.errors == [] and len(report.settled) == 1
    assert funding_entries(app, early.sub_account_id) == [("funding", D("-2.4"))]
    assert funding_entries(app, late.sub_account_id) == []
    trade(late, "SELL", "0.4")


def test_what_the_books_do_not_explain_is_the_houses(
    app: App, sim: SimServer, clock: TestClock
) -> None:
    """The master account holds 0.1 BTC no sub-account booked (someone traded by hand): the
    exchange charges 0.6 more than the sub-accounts pay; the house takes it, so the wallets
    still move with the master's."""
    holder = trader(app, "0.3", "BUY")
    sim.admin("/sim/positions/adjust", {"symbol": "BTCUSDT", "qty": "0.1"})
    before_books, before_master = wallets(app), master_wallet(sim)
    try:
        settle_on_the_exchange(sim)
    finally:
        sim.admin("/sim/positions/adjust", {"symbol": "BTCUSDT", "qty": "-0.1"})
    later(clock)
    [settled] = settle(app).settled

    assert (settled["exchangeAmount"], settled["allocated"], settled["houseResidual"]) == (
        "-2.4",
        "-1.8",
        "-0.6",
    )
    with unit_of_work(app.sessions) as s:
        house_id = s.execute(select(SubAccount.id).where(SubAccount.is_house)).scalar_one()
    assert funding_entries(app, house_id)[-1] == ("funding_residual", D("-0.6"))
    assert funding_entries(app, holder.sub_account_id) == [("funding", D("-1.8"))]
    assert wallets(app) - before_books == master_wallet(sim) - before_master
    trade(holder, "SELL", "0.3")


def test_a_funding_waits_for_its_income_record_rather_than_settle_it_as_nothing(
    app: App, sim: SimServer, clock: TestClock, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The books hold 0.3 at the funding time but the exchange shows no income record for it
    yet (Binance's funding transaction may come up to a minute late): taken as "the master
    held nothing", the house would have paid the holder's funding for good, and the record
    that then appears never booked. The funding waits (and the later ones behind it)."""
    holder = trader(app, "0.3", "BUY")
    before_books, before_master = wallets(app), master_wallet(sim)
    at_ms = settle_on_the_exchange(sim)
    real = app.exchange.fetch_funding_income
    monkeypatch.setattr(app.exchange, "fetch_funding_income", lambda *a, **k: [])
    clock.set(datetime.fromtimestamp(at_ms / 1000, UTC) + SETTLE_AFTER + timedelta(minutes=1))

    first = settle(app)

    assert (first.settled, first.waiting, first.errors) == ([], [f"{BTC}@{at_ms}"], [])
    assert funding_entries(app, holder.sub_account_id) == []
    monkeypatch.setattr(app.exchange, "fetch_funding_income", real)
    clock.advance(60)
    [settled] = settle(app).settled
    assert (settled["exchangeAmount"], settled["houseResidual"]) == ("-1.8", "0")
    assert wallets(app) - before_books == master_wallet(sim) - before_master == D("-1.8")
    trade(holder, "SELL", "0.3")


def test_a_funding_without_an_income_record_after_the_wait_is_the_houses(app: App) -> None:
    """Half an hour on, still no record: the master held nothing (its position and the books
    disagree: position-sync reports that), the house takes the holders' share as residual so
    the wallets together still move with the master's (not at all)."""
    holder = trader(app, "0.1", "BUY")
    at_ms = int(time.time() * 1000)  # a funding time of our own, after the buy
    rate = FundingRate(symbol=BTC, funding_time_ms=at_ms, rate=D("0.0001"), mark_price=D("60000"))
    with pytest.raises(IncomeNotYetSeen):
        settle_one(app, rate, None, waited=False)
    settled = settle_one(app, rate, None, waited=True)
    assert settled is not None
    assert (settled["exchangeAmount"], settled["allocated"], settled["houseResidual"]) == (
        "0",
        "-0.6",
        "0.6",
    )
    trade(holder, "SELL", "0.1")


def test_a_symbol_settled_less_than_an_hour_ago_is_not_asked_about(
    app: App, sim: SimServer, clock: TestClock, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Binance's shortest funding interval is an hour, and GET /fapi/v1/fundingRate has a
    limit of its own (500 requests / 5 min / IP): a run every few minutes asked it for every
    held symbol each time."""
    holder = trader(app, "0.3", "BUY")
    at_ms = settle_on_the_exchange(sim)
    clock.set(datetime.fromtimestamp(at_ms / 1000, UTC) + SETTLE_AFTER + timedelta(seconds=1))
    assert len(settle(app).settled) == 1
    calls: list[str] = []
    real = app.exchange.fetch_funding_rates

    def counted(symbol: str, start_ms: int, end_ms: int) -> list[FundingRate]:
        calls.append(symbol)
        return real(symbol, start_ms, end_ms)

    monkeypatch.setattr(app.exchange, "fetch_funding_rates", counted)
    for _ in range(10):  # ten more minutes of runs
        clock.advance(60)
        report = settle_funding(app)
        assert report.settled == [] and report.errors == []
    assert calls == []
    clock.advance(3600)
    settle_funding(app)
    assert calls == [BTC], "asked again once an hour has passed"
    trade(holder, "SELL", "0.3")


def test_one_funding_time_settled_by_two_workers_at_once_is_booked_once(app: App) -> None:
    holder = trader(app, "0.25", "BUY")
    at_ms = int(time.time() * 1000)  # a funding time of our own (the exchange's clock): held
    rate = FundingRate(symbol=BTC, funding_time_ms=at_ms, rate=D("0.0002"), mark_price=D("60000"))
    barrier = threading.Barrier(2)
    results: list[object] = []

    def run() -> None:
        barrier.wait()
        results.append(settle_one(app, rate, D("-3")))

    threads = [threading.Thread(target=run) for _ in range(2)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(10)

    assert sorted(r is None for r in results) == [False, True]
    assert funding_entries(app, holder.sub_account_id) == [("funding", D("-3"))]
    with unit_of_work(app.sessions) as s:
        row = s.get(FundingSettlement, (BTC, datetime.fromtimestamp(at_ms / 1000, UTC)))
        assert row is not None
        posted = s.execute(
            select(LedgerEntry.ref_type).where(
                LedgerEntry.kind == "FUNDING", LedgerEntry.ref_id == f"{BTC}@{at_ms}"
            )
        ).scalars()
        assert sorted(posted) == ["funding"] * row.accounts + (
            ["funding_residual"] if row.house_residual else []
        ), "one entry per holder, one residual: nothing twice"
    trade(holder, "SELL", "0.25")


def test_a_flat_account_taken_below_zero_is_made_whole_by_the_house(app: App) -> None:
    """Held 0.01 BTC at the funding time, flat since, 60 USDT left before a (deliberately
    huge) 20 % funding of 120: the account pays it all, and the house insures the 60 it
    cannot, as it does for a fill's loss (INSURANCE on both sides, wallet back to zero)."""
    t = Trader(app, new_user())
    sub = t.send("create_sub_account", (cmd.CreateSubAccount, app.accounts.create), name="thin")[
        "data"
    ]["subAccountId"]
    t.sub_account_id = sub
    t.send("deposit", (cmd.Deposit, app.accounts.deposit), subAccountId=sub, amount="60.3")
    trade(t, "BUY", "0.01")
    time.sleep(0.005)
    at_ms = int(time.time() * 1000)  # the exchange's clock: after the buy, before the sell
    time.sleep(0.005)
    trade(t, "SELL", "0.01")
    with unit_of_work(app.sessions) as s:
        house_id = s.execute(select(SubAccount.id).where(SubAccount.is_house)).scalar_one()
        wallet = s.get(SubAccount, sub).wallet_balance
        house_before = s.get(SubAccount, house_id).wallet_balance
    assert D(0) < wallet < D(120)

    rate = FundingRate(symbol=BTC, funding_time_ms=at_ms, rate=D("0.2"), mark_price=D("60000"))
    settled = settle_one(app, rate, D("-120"))

    assert settled is not None and settled["accounts"] == 1
    with unit_of_work(app.sessions) as s:
        entries = s.execute(
            select(LedgerEntry.kind, LedgerEntry.amount)
            .where(LedgerEntry.sub_account_id == sub, LedgerEntry.ref_type == "funding")
            .order_by(LedgerEntry.id)
        ).all()
        assert [tuple(e) for e in entries] == [("FUNDING", D(-120)), ("INSURANCE", 120 - wallet)]
        assert s.get(SubAccount, sub).wallet_balance == 0
        house_after = s.get(SubAccount, house_id).wallet_balance
    assert house_before - house_after == 120 - wallet, "the house paid the shortfall (no residual)"


def test_a_symbol_behind_the_others_is_still_due_from_its_own_last_settlement(app: App) -> None:
    """ETH's last settlement is three hours old (its runs failed since), BTC's a minute old;
    ETH's only position closed an hour ago. Judged against the newest settlement of any
    symbol, ETH would look done and its fundings of the last three hours never settled."""
    now = app.clock.now()
    t = Trader(app, new_user())
    sub = t.send("create_sub_account", (cmd.CreateSubAccount, app.accounts.create), name="e")[
        "data"
    ]["subAccountId"]
    eth = "ETH/USDT:USDT"
    with unit_of_work(app.sessions) as s:
        s.add(
            Position(
                sub_account_id=sub,
                symbol=eth,
                qty=D(0),
                entry_price=D(0),
                leverage=5,
                opened_at=now - timedelta(hours=5),
                closed_at=now - timedelta(hours=1),
            )
        )
        for symbol, age in ((eth, timedelta(hours=3)), (BTC, timedelta(minutes=1))):
            s.add(
                FundingSettlement(
                    symbol=symbol,
                    funding_time=now - age,
                    rate=D(0),
                    mark_price=D(1),
                    exchange_amount=D(0),
                    allocated=D(0),
                    house_residual=D(0),
                    accounts=0,
                )
            )
    with unit_of_work(app.sessions) as s:
        starts = due(s, now)
    eth_last = now - timedelta(hours=3)
    assert starts[eth][0] == int(eth_last.timestamp() * 1000) + 1
