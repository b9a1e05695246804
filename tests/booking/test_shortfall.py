"""Insurance covers a sub-account's negative equity once it holds no position (SPEC §5: "After
liquidation a negative equity is absorbed by the house insurance entry"), not a single fill's
loss while the account still holds positions whose profit covers it.

Booking used to decide per fill: a realized loss beyond the wallet was capped at the wallet and
the rest charged to the house at once. The account then realized its profitable position and
kept all of it: the house paid part of a loss the account's own equity covered (the first three
tests failed so). Now the wallet takes the whole loss (it may go below zero while positions
stay open) and the house insures what is still negative when the account is flat.
"""

from __future__ import annotations

import random
from collections.abc import Callable
from decimal import Decimal

from sqlalchemy import select
from sqlalchemy.orm import Session, sessionmaker

from pms.app import App
from pms.commands import schemas as cmd
from pms.db.models import Fill
from pms.db.session import unit_of_work
from pms.marketdata.prices import price_key
from pms.riskengine.enforce import RiskEnforcer
from tests.booking.helpers import (
    BTC,
    ETH,
    book,
    house_insurance_total,
    ledger_rows,
    ledger_total,
    make_order,
    positions,
    trade,
    wallet,
)
from tests.factories import funded_account

D = Decimal


def two_longs(factory: sessionmaker[Session]) -> int:
    """A sub-account with a wallet of 100, long 0.01 BTC at 60000 and long 0.2 ETH at 3000 (no
    fees, to keep the numbers plain)."""
    sub, _ = funded_account(factory, "100")
    book(factory, trade(make_order(factory, sub, "BUY", "0.01", BTC), "0.01", "60000"))
    book(factory, trade(make_order(factory, sub, "BUY", "0.2", ETH), "0.2", "3000"))
    return sub


def forget_prices(app: App) -> None:
    """The simulator's marks from now on: no in-process copy, and no record an earlier
    test's streamer left in Redis (read first while under 5 s old)."""
    app.redis.delete(*(price_key(app.settings.redis_prefix, symbol) for symbol in (BTC, ETH)))
    app.prices.forget()


def test_house_does_not_insure_a_solvent_account_closing_its_losing_leg_first(
    session_factory: sessionmaker[Session],
) -> None:
    sub = two_longs(session_factory)
    insured_before = house_insurance_total(session_factory)

    # BTC falls to 45000 (uPnL -150), ETH rises to 4000 (uPnL +200): equity 100-150+200 = 150.
    # The user closes the losing leg first: realized -150 on a wallet of 100...
    book(
        session_factory,
        trade(make_order(session_factory, sub, "SELL", "0.01", BTC), "0.01", "45000"),
    )
    # ...and then the winning leg: realized +200.
    book(
        session_factory, trade(make_order(session_factory, sub, "SELL", "0.2", ETH), "0.2", "4000")
    )

    assert all(p.closed_at is not None for p in positions(session_factory, sub))
    # The account's equity never went below zero (150 when the BTC leg was closed), so the
    # house owes nothing: deposits 100 + realized (-150 + 200) = 150.
    insured = house_insurance_total(session_factory) - insured_before
    final = wallet(session_factory, sub)
    assert final == ledger_total(session_factory, sub)  # the ledger invariant itself holds
    assert (final, insured) == (D("150"), D("0")), (
        f"sub-account ends with {final} (should be 150), house paid {-insured} of insurance "
        "for an account that was never insolvent"
    )


def test_takeover_insures_a_leg_while_another_leg_keeps_the_account_solvent(
    app: App, prices: Callable[..., None], session_factory: sessionmaker[Session]
) -> None:
    """The same through the liquidation takeover (RiskEnforcer._run_takeover, one transaction,
    legs booked symbol by symbol at mark)."""
    sub = two_longs(session_factory)
    # Marks: BTC 45000 (uPnL -150), ETH 3300 (uPnL +60): equity = 100 - 150 + 60 = 10 > 0.
    prices("BTCUSDT", "45000")
    prices("ETHUSDT", "3300")
    forget_prices(app)
    insured_before = house_insurance_total(session_factory)

    RiskEnforcer(app)._run_takeover(random.randint(10**8, 10**9), sub)

    assert all(p.closed_at is not None for p in positions(session_factory, sub))
    insured = house_insurance_total(session_factory) - insured_before
    final = wallet(session_factory, sub)
    # Positions moved to the house at mark: the sub-account keeps its equity at mark (10) and
    # the house insures nothing (equity was positive).
    assert (final, insured) == (D("10"), D("0")), (
        f"after takeover the sub-account holds {final} (equity at mark was 10) and the house "
        f"paid {-insured} of insurance"
    )


def test_user_extracts_house_insurance_through_ordinary_orders(
    app: App,
    trader: Callable[..., object],
    prices: Callable[..., None],
    session_factory: sessionmaker[Session],
) -> None:
    """Reachable with ordinary, risk-checked commands: a BTC long and an ETH short (a hedge),
    then the user closes the losing leg first (a reduce-only close is always allowed)."""
    t = trader("100")
    sub = t.sub_account_id  # type: ignore[attr-defined]
    place = (cmd.PlaceMarketOrder, app.orders.place_market)
    close = (cmd.ClosePosition, app.orders.close_position)
    forget_prices(app)  # marks of an earlier test may still be cached
    # Exposure 480 + 480 = 960 <= 10x equity; initial margin 24 + 24 at 20x.
    for symbol, side, qty in ((BTC, "BUY", "0.008"), (ETH, "SELL", "0.16")):
        r = t.send(
            "place_market_order",
            place,
            subAccountId=sub,
            symbol=symbol,
            side=side,
            qty=qty,
            leverage=20,
        )  # type: ignore[attr-defined]
        assert r["ok"], r
    insured_before = house_insurance_total(session_factory)
    prices("BTCUSDT", "46000")  # a crash: BTC leg about 0.008 * -14000 = -112
    prices("ETHUSDT", "2300")  # ETH short about 0.16 * 700 = +112; equity stays about 100
    forget_prices(app)
    for symbol in (BTC, ETH):  # losing leg first
        r = t.send("close_position", close, subAccountId=sub, symbol=symbol)  # type: ignore[attr-defined]
        assert r["ok"], r
    with unit_of_work(session_factory) as s:
        fills = list(s.execute(select(Fill).where(Fill.sub_account_id == sub)).scalars())
    realized = sum((f.realized_pnl for f in fills), D(0))
    fees = sum((f.fee for f in fills), D(0))
    insured = house_insurance_total(session_factory) - insured_before
    final = wallet(session_factory, sub)
    expected = D("100") + realized - fees  # what the master account made for this user
    assert (final, insured) == (expected, D("0")), (
        f"user ends with {final}, entitled to {expected}; the house paid {-insured}"
    )


def test_a_deficit_left_when_the_account_is_flat_is_insured_by_the_house(
    session_factory: sessionmaker[Session],
) -> None:
    # Arrange: long 0.01 BTC at 60000 and long 0.2 ETH at 3000 on a wallet of 100.
    sub = two_longs(session_factory)
    insured_before = house_insurance_total(session_factory)

    # Act: BTC closed 15000 lower (-150: the wallet goes to -50, ETH still open), then ETH
    # closed 100 higher (+20): flat with -30.
    book(
        session_factory,
        trade(make_order(session_factory, sub, "SELL", "0.01", BTC), "0.01", "45000"),
    )
    negative = wallet(session_factory, sub)
    book(
        session_factory, trade(make_order(session_factory, sub, "SELL", "0.2", ETH), "0.2", "3100")
    )

    # Assert: the loss was taken in full, the deficit insured once flat, every entry on record.
    assert negative == D("-50")
    assert wallet(session_factory, sub) == 0 == ledger_total(session_factory, sub)
    assert house_insurance_total(session_factory) - insured_before == D("-30")
    assert [(kind, amount) for kind, amount, _ in ledger_rows(session_factory, sub)][1:] == [
        ("REALIZED_PNL", D("-150")),
        ("REALIZED_PNL", D("20")),
        ("INSURANCE", D("30")),
    ]
