"""A frozen sub-account under risk enforcement: the engine's own reducing orders still go out
(ADL cuts, liquidation closes), and the admin's freeze is still in place afterwards."""

from __future__ import annotations

from decimal import Decimal

from pms.commands import schemas as cmd
from pms.db.models import LiquidationEvent, SubAccount
from pms.db.session import unit_of_work
from tests.riskengine.conftest import CatchingHarness
from tests.trading.conftest import BTC, Trader

D = Decimal


def freeze(h: CatchingHarness, t: Trader) -> None:
    answer = t.send(
        "freeze_sub_account",
        (cmd.FreezeSubAccount, h.app.accounts.freeze),
        role="admin",
        subAccountId=t.sub_account_id,
        reason="compliance review",
    )
    assert answer["ok"], answer
    assert h.account(t.sub_account_id).status == "FROZEN"


def test_adl_cuts_a_frozen_account_and_keeps_it_frozen(catching: CatchingHarness) -> None:
    """The pre-trade checks refuse every order of a FROZEN account; the ADL cut is the
    engine's, so it runs (under RESTRICTED for its duration) and FROZEN comes back after."""
    h = catching
    t = h.open_long("1000", "0.5", 50)
    sub = t.sub_account_id
    freeze(h, t)

    h.move(h.mark_for_ratio(sub, D("0.905")))  # ADL1: cut 25% of 0.5

    assert h.errors == []
    assert h.state(sub)[1] == D("0.375")
    adl = [e for e in h.events(sub) if e.action == "adl"]
    assert [(e.status, e.details["frozen"], e.details["statusAfter"]) for e in adl] == [
        ("DONE", True, "FROZEN")
    ]
    assert h.account(sub).status == "FROZEN"
    refused = t.send(
        "place_market_order",
        (cmd.PlaceMarketOrder, h.app.orders.place_market),
        subAccountId=sub,
        symbol=BTC,
        side="SELL",
        qty="0.001",
    )
    assert refused["error"]["code"] == "ACCOUNT_FROZEN", "the trader is still frozen out"


def test_frozen_account_that_passed_adl_is_still_liquidated(catching: CatchingHarness) -> None:
    """Past ADL1 on the way down, then past liquidation: the ADL cut of a frozen account used
    to be refused (ACCOUNT_FROZEN) and left PENDING, and every later enforcement re-ran it
    first and failed again, so the liquidation never came and 0.5 BTC stayed open."""
    h = catching
    t = h.open_long("1000", "0.5", 50)
    sub = t.sub_account_id
    freeze(h, t)

    h.move(h.mark_for_ratio(sub, D("0.905")))  # ADL1
    h.move(h.mark_for_ratio(sub, D("1.05")))  # past liquidation

    assert h.errors == []
    assert h.state(sub)[1] == 0
    assert [(e.action, e.status) for e in h.events(sub)] == [
        ("margin_call", "DONE"),
        ("adl", "DONE"),
        ("liquidate_close", "DONE"),
    ]
    assert h.account(sub).status == "FROZEN"


def test_liquidation_does_not_lift_an_admin_freeze(catching: CatchingHarness) -> None:
    """Only unfreeze_sub_account (admin) lifts a freeze (docs/commands.md): a liquidation
    runs a frozen account through LIQUIDATING and, once it is flat, back to FROZEN, not to
    ACTIVE. The event remembers it and publishes the status it left."""
    h = catching
    t = h.open_long("1000", "0.5", 50)
    sub = t.sub_account_id
    freeze(h, t)

    h.move(h.mark_for_ratio(sub, D("1.02")))  # straight to LIQUIDATION

    assert h.errors == []
    assert h.state(sub)[1] == 0
    account = h.account(sub)
    assert (account.status, account.tier) == ("FROZEN", "NORMAL")
    published = h.published("liquidation", sub)[-1]["data"]
    assert (published["status"], published["frozen"], published["statusAfter"]) == (
        "DONE",
        True,
        "FROZEN",
    )
    unfrozen = t.send(
        "unfreeze_sub_account",
        (cmd.FreezeSubAccount, h.app.accounts.unfreeze),
        role="admin",
        subAccountId=sub,
    )
    assert unfrozen["ok"] and h.account(sub).status == "ACTIVE"


def test_a_liquidation_resumed_after_a_freeze_completes_and_leaves_the_account_frozen(
    catching: CatchingHarness,
) -> None:
    """A worker died right after deciding a liquidation (event PENDING, account LIQUIDATING);
    an admin froze the account before it was resumed. The resumed close must still go out
    (it used to be refused, ACCOUNT_FROZEN, forever) and the freeze must still hold after."""
    h = catching
    t = h.open_long("1000", "0.5", 50)
    sub = t.sub_account_id
    with unit_of_work(h.app.sessions) as s:
        s.get(SubAccount, sub).status = "LIQUIDATING"
        s.add(
            LiquidationEvent(
                sub_account_id=sub,
                idempotency_key=f"{sub}:liquidate_close:1",
                tier="LIQUIDATION",
                action="liquidate_close",
                status="PENDING",
                details={"reason": "tier ADL2 -> LIQUIDATION"},
            )
        )
    freeze(h, t)

    h.reenforce(sub)

    assert h.errors == []
    assert h.state(sub)[1] == 0
    [event] = h.events(sub)
    assert (event.status, event.details["frozen"]) == ("DONE", True)
    assert h.account(sub).status == "FROZEN"
