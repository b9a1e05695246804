"""A frozen sub-account under risk enforcement: the engine's own reducing orders still go out
(ADL cuts, liquidation closes), and the admin's freeze is still in place afterwards."""

from __future__ import annotations

from decimal import Decimal

import pytest

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
    assert answer["data"]["frozen"] is True
    # A LIQUIDATING account stays LIQUIDATING (its liquidation runs to the end and puts
    # FROZEN back); any other is FROZEN at once.
    assert h.account(t.sub_account_id).status == answer["data"]["status"]
    assert answer["data"]["status"] in ("FROZEN", "LIQUIDATING")


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


def unfreeze(h: CatchingHarness, t: Trader) -> dict:
    return t.send(
        "unfreeze_sub_account",
        (cmd.FreezeSubAccount, h.app.accounts.unfreeze),
        role="admin",
        subAccountId=t.sub_account_id,
        reason="review closed",
    )


def test_an_account_unfrozen_while_its_liquidation_is_pending_ends_active(
    catching: CatchingHarness,
) -> None:
    """A frozen account's liquidation was decided (event PENDING, frozen remembered, account
    LIQUIDATING) when the admin lifted the freeze. Unfreeze used to be refused ("is
    LIQUIDATING, not FROZEN") and the liquidation then put FROZEN back: the account ended
    frozen after the admin had unfrozen it."""
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
                details={"reason": "tier ADL2 -> LIQUIDATION", "frozen": True},
            )
        )

    answer = unfreeze(h, t)

    assert answer["ok"], answer
    assert (answer["data"]["status"], answer["data"]["frozen"]) == ("LIQUIDATING", False)
    h.reenforce(sub)
    assert h.errors == []
    assert h.state(sub)[1] == 0
    [event] = h.events(sub)
    assert (event.status, event.details["frozen"], event.details["unfrozen"]) == (
        "DONE",
        False,
        True,
    )
    assert h.account(sub).status == "ACTIVE"


def test_an_account_unfrozen_while_its_liquidation_runs_ends_active(
    catching: CatchingHarness, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The admin's unfreeze lands while the liquidation of the frozen account is placing its
    closes: the liquidation's end reads the freeze back from its event, so the account ends
    ACTIVE, not FROZEN."""
    h = catching
    t = h.open_long("1000", "0.5", 50)
    sub = t.sub_account_id
    freeze(h, t)
    answers = []
    place = h.enforcer._place

    def unfrozen_meanwhile(*args: object, **kwargs: object) -> object:
        answers.append(unfreeze(h, t))
        return place(*args, **kwargs)  # type: ignore[arg-type]

    monkeypatch.setattr(h.enforcer, "_place", unfrozen_meanwhile)

    h.move(h.mark_for_ratio(sub, D("1.02")))

    assert h.errors == []
    assert [a["ok"] for a in answers] == [True], answers
    assert h.state(sub)[1] == 0
    assert h.account(sub).status == "ACTIVE"
    published = h.published("liquidation", sub)[-1]["data"]
    assert (published["frozen"], published["statusAfter"]) == (False, "ACTIVE")


def test_unfreeze_of_an_account_that_is_not_frozen_changes_nothing(
    catching: CatchingHarness,
) -> None:
    """Answered with the account as it is (``frozen: false``), no status touched, no event."""
    h = catching
    t = h.open_long("1000", "0.5", 50)
    since = h.app.events.read("0", count=100_000)[-1][0]
    answer = unfreeze(h, t)
    assert answer["data"] == {"subAccountId": t.sub_account_id, "status": "ACTIVE", "frozen": False}
    with unit_of_work(h.app.sessions) as s:
        s.get(SubAccount, t.sub_account_id).status = "LIQUIDATING"  # not frozen before
    answer = unfreeze(h, t)
    assert answer["data"]["status"] == "LIQUIDATING"
    assert h.account(t.sub_account_id).status == "LIQUIDATING"
    assert h.published("risk_update", t.sub_account_id, since) == []
    h.close_position(t)


def test_a_retried_unfreeze_does_not_contradict_the_first_attempt(
    catching: CatchingHarness, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The unfreeze committed, then its event could not be published (Redis away): the
    command answered INTERNAL and stayed open. Its retry found the account ACTIVE and stored
    VALIDATION_ERROR "not FROZEN" for good: the admin was told the unfreeze failed, though
    the account was trading again."""
    h = catching
    t = h.open_long("1000", "0.1", 10)
    freeze(h, t)
    real = h.app.accounts._notify.event
    calls = iter([ConnectionError("redis away")])

    def flaky(*args: object, **kwargs: object) -> None:
        failure = next(calls, None)
        if failure is not None:
            raise failure
        real(*args, **kwargs)

    monkeypatch.setattr(h.app.accounts._notify, "event", flaky)
    request = {"requestId": "unfreeze-retried-1"}
    first = t.send(
        "unfreeze_sub_account",
        (cmd.FreezeSubAccount, h.app.accounts.unfreeze),
        role="admin",
        subAccountId=t.sub_account_id,
        **request,
    )
    assert first["error"]["code"] == "INTERNAL"
    assert h.account(t.sub_account_id).status == "ACTIVE"
    again = t.send(
        "unfreeze_sub_account",
        (cmd.FreezeSubAccount, h.app.accounts.unfreeze),
        role="admin",
        subAccountId=t.sub_account_id,
        **request,
    )
    assert again["ok"], again
    assert again["data"] == {"subAccountId": t.sub_account_id, "status": "ACTIVE", "frozen": False}
    h.close_position(t)
