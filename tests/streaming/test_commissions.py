"""Commissions in USDT: the streamer turns Binance's BNB fee discount off on every user-stream
connection, and a fill whose commission is not in USDT is booked loudly, never silently."""

from __future__ import annotations

import asyncio
import socket
from collections.abc import Callable, Iterator
from dataclasses import replace
from decimal import Decimal

import pytest
from sqlalchemy import select
from structlog.testing import capture_logs

from pms.app import App
from pms.clock import SystemClock
from pms.config import Settings
from pms.db.models import Fill, LedgerEntry
from pms.db.session import unit_of_work
from pms.domain.enums import LedgerKind
from pms.streaming.commissions import ensure_usdt_commissions
from pms.streaming.fills import FillSink
from pms.streaming.rest import ExchangeRest
from streamer.app import rest_credentials
from tests.factories import funded_account
from tests.streaming.conftest import StreamerThread
from tests.streaming.test_fills import account, pending_order, update
from tests.support import wait_for


@pytest.fixture
def fee_burn(sim_settings: Settings) -> Iterator[Callable[..., bool | None]]:
    """Read (no argument) or set the simulator's flag through a REST client of its own."""
    loop = asyncio.new_event_loop()
    rest = ExchangeRest(*rest_credentials(sim_settings))

    def flag(on: bool | None = None) -> bool | None:
        if on is None:
            return loop.run_until_complete(rest.fee_burn())
        loop.run_until_complete(rest.set_fee_burn(on))
        return None

    yield flag
    flag(False)
    loop.run_until_complete(rest.close())
    loop.close()


def test_the_discount_is_turned_off_once_and_then_left_alone(
    sim_settings: Settings, fee_burn: Callable[..., bool | None]
) -> None:
    fee_burn(True)
    rest = ExchangeRest(*rest_credentials(sim_settings))

    async def twice() -> tuple[bool | None, bool | None]:
        try:
            return await ensure_usdt_commissions(rest), await ensure_usdt_commissions(rest)
        finally:
            await rest.close()

    with capture_logs() as logs:
        first, second = asyncio.run(twice())
    assert (first, second) == (True, False)
    assert fee_burn() is False
    assert [e["log_level"] for e in logs if "BNB fee discount" in e["event"]] == ["warning"]


def test_not_enforced_the_discount_is_reported_and_left_on(
    sim_settings: Settings, fee_burn: Callable[..., bool | None]
) -> None:
    fee_burn(True)
    rest = ExchangeRest(*rest_credentials(sim_settings))

    async def ask() -> bool | None:
        try:
            return await ensure_usdt_commissions(rest, enforce=False)
        finally:
            await rest.close()

    with capture_logs() as logs:
        assert asyncio.run(ask()) is True
    assert fee_burn() is True
    assert [e["log_level"] for e in logs if "BNB fee discount" in e["event"]] == ["error"]


def test_an_exchange_that_cannot_be_asked_is_logged_not_fatal() -> None:
    with socket.socket() as s:  # a port nothing listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    rest = ExchangeRest(f"http://127.0.0.1:{port}", "key", "secret")

    async def ask() -> bool | None:
        try:
            return await ensure_usdt_commissions(rest)
        finally:
            await rest.close()

    with capture_logs() as logs:
        assert asyncio.run(ask()) is None
    assert [e["log_level"] for e in logs if "BNB fee discount" in e["event"]] == ["error"]


def test_the_streamer_turns_the_discount_off_when_its_user_stream_connects(
    make_streamer: Callable[..., StreamerThread],
    sim_settings: Settings,
    fee_burn: Callable[..., bool | None],
) -> None:
    fee_burn(True)
    st = make_streamer()
    wait_for(lambda: st.streamer.syncs_enqueued >= 1, 15, message="user stream connected")
    assert fee_burn() is False
    st.stop()
    fee_burn(True)  # left alone by a streamer told not to enforce it
    relaxed = make_streamer(
        settings=sim_settings.model_copy(update={"enforce_usdt_commissions": False})
    )
    wait_for(lambda: relaxed.streamer.syncs_enqueued >= 1, 15, message="user stream connected")
    assert fee_burn() is True


def test_a_commission_in_bnb_is_recorded_on_the_fill_and_logged(app: App) -> None:
    a, _ = funded_account(app.sessions, "5000")
    coid = pending_order(app, a, "bnb-e1")
    event = update(coid, "bnb-e1", "bnb-t1")
    assert event.trade is not None
    event = replace(event, trade=replace(event.trade, fee=Decimal("0.0001"), fee_asset="BNB"))
    sink = FillSink(app.sessions, app.notifier, SystemClock())
    with capture_logs() as logs:
        sink.handle_batch([event])
    assert sink.booked == 1
    wallet, qty, fees_paid = account(app, a)
    assert (wallet, qty, fees_paid) == (Decimal(5000), Decimal("0.002"), Decimal(0))
    with unit_of_work(app.sessions) as s:
        fill = s.execute(select(Fill).where(Fill.exchange_trade_id == "bnb-t1")).scalar_one()
        assert (fill.fee, fill.fee_asset) == (Decimal("0.0001"), "BNB")
        kinds = s.execute(select(LedgerEntry.kind).where(LedgerEntry.sub_account_id == a)).scalars()
        assert LedgerKind.FEE.value not in {str(k) for k in kinds}
    errors = [e for e in logs if e["log_level"] == "error" and "not in USDT" in e["event"]]
    assert [(e["tradeId"], e["feeAsset"], e["fee"]) for e in errors] == [
        ("bnb-t1", "BNB", "0.0001")
    ]
