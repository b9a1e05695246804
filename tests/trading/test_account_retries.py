"""A deposit/withdrawal whose result commit fails (or whose worker dies between the handler's
own commit and the runner's DONE) must answer the retry with what happened, not a refusal.

docs/commands.md: "In the rare case where the commit then fails, the answer already sent
stands and the command is left open: a retry resumes it and answers again from what actually
happened ... with no second effect."
"""

from __future__ import annotations

import uuid
from decimal import Decimal
from typing import Any

import pytest
from sqlalchemy import select

from pms.app import App
from pms.commands import runner as runner_module
from pms.commands import schemas as cmd
from pms.db.models import LedgerEntry, SubAccount
from pms.db.session import unit_of_work


def _fail_first_commit(monkeypatch: pytest.MonkeyPatch) -> None:
    real = runner_module.execute_and_commit
    calls = {"n": 0}

    def flaky(conn: Any, sql: str, params: Any) -> Any:
        calls["n"] += 1
        if calls["n"] == 1:
            raise RuntimeError("commit lost (test)")
        return real(conn, sql, params)

    monkeypatch.setattr(runner_module, "execute_and_commit", flaky)


def _wallet_and_entries(app: App, sub: int, rid: str) -> tuple[Decimal, int]:
    with unit_of_work(app.sessions) as s:
        wallet = s.get(SubAccount, sub).wallet_balance
        n = len(s.execute(select(LedgerEntry).where(LedgerEntry.ref_id == rid)).scalars().all())
        return wallet, n


@pytest.mark.parametrize(
    ("actor", "model_attr", "handler_attr", "expected"),
    [
        ("deposit", "Deposit", "deposit", "1025"),
        ("withdraw", "Withdraw", "withdraw", "975"),
    ],
)
def test_retry_after_failed_result_commit_answers_the_applied_move(
    app: App, trader, monkeypatch: pytest.MonkeyPatch, actor, model_attr, handler_attr, expected
) -> None:
    t = trader("1000")
    rid = uuid.uuid4().hex
    model = getattr(cmd, model_attr)
    handler = getattr(app.accounts, handler_attr)
    _fail_first_commit(monkeypatch)

    first = t.send(
        actor, (model, handler), requestId=rid, subAccountId=t.sub_account_id, amount="25"
    )
    # The published answer stands: the money moved.
    assert first["ok"], first
    assert first["data"]["balance"] == expected
    assert _wallet_and_entries(app, t.sub_account_id, rid) == (Decimal(expected), 1)

    # The gateway retries the same command (the request is open, as documented).
    again = t.send(
        actor, (model, handler), requestId=rid, subAccountId=t.sub_account_id, amount="25"
    )
    assert _wallet_and_entries(app, t.sub_account_id, rid) == (Decimal(expected), 1)
    # It was answered (and stored for good) as VALIDATION_ERROR
    # "ledger entry ... already exists", contradicting the move that was applied.
    assert again["ok"], again
    assert again["data"]["balance"] == expected
    assert app.results.get(rid)["ok"], app.results.get(rid)


def test_other_payload_under_an_unstored_request_id_is_refused_as_duplicate(
    app: App, trader, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The deposit under ``rid`` was applied (and answered ok); a different command under the
    same ``rid`` must be DUPLICATE_REQUEST, never executed."""
    t = trader("1000")
    rid = uuid.uuid4().hex
    _fail_first_commit(monkeypatch)
    first = t.send(
        "deposit",
        (cmd.Deposit, app.accounts.deposit),
        requestId=rid,
        subAccountId=t.sub_account_id,
        amount="25",
    )
    assert first["ok"], first

    other = t.send(
        "withdraw",
        (cmd.Withdraw, app.accounts.withdraw),
        requestId=rid,
        subAccountId=t.sub_account_id,
        amount="500",
    )
    wallet, _ = _wallet_and_entries(app, t.sub_account_id, rid)
    # The claim was rolled back with the failed commit: the withdrawal used to run.
    assert wallet == Decimal("1025"), (wallet, other)
    assert other["error"]["code"] == "DUPLICATE_REQUEST", other


def test_create_sub_account_retried_after_failed_result_commit_creates_one_account(
    app: App, monkeypatch: pytest.MonkeyPatch
) -> None:
    from tests.factories import new_user

    user = new_user()
    rid = uuid.uuid4().hex
    command = {"requestId": rid, "userId": user, "name": "desk"}
    _fail_first_commit(monkeypatch)
    first = app.runner.run(
        "create_sub_account", dict(command), cmd.CreateSubAccount, app.accounts.create
    )
    assert first is not None and first["ok"], first
    again = app.runner.run(
        "create_sub_account", dict(command), cmd.CreateSubAccount, app.accounts.create
    )
    assert again is not None and again["ok"], again
    with unit_of_work(app.sessions) as s:
        owned = s.execute(select(SubAccount).where(SubAccount.owner_user_id == user)).all()
    # The retry ran the handler again: nothing tied the account to its requestId.
    assert len(owned) == 1, (first["data"], again["data"])
    assert again["data"] == first["data"]


def test_retry_after_internal_error_from_event_publish_answers_the_applied_deposit(
    app: App, trader, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The deposit commits, then publishing its balance_update fails (a Redis blip): the
    runner answers INTERNAL "may be retried with the same requestId" and leaves the request
    open. The retry must answer the deposit that happened, not refuse it."""
    import redis

    t = trader("1000")
    rid = uuid.uuid4().hex
    notify = app.accounts._notify
    real = notify.event
    calls = {"n": 0}

    def flaky(*args: Any, **kwargs: Any) -> Any:
        calls["n"] += 1
        if calls["n"] == 1:
            raise redis.ConnectionError("redis restarting (test)")
        return real(*args, **kwargs)

    monkeypatch.setattr(notify, "event", flaky)
    first = t.send(
        "deposit",
        (cmd.Deposit, app.accounts.deposit),
        requestId=rid,
        subAccountId=t.sub_account_id,
        amount="25",
    )
    assert first["error"]["code"] == "INTERNAL", first
    assert _wallet_and_entries(app, t.sub_account_id, rid) == (Decimal("1025"), 1)

    again = t.send(
        "deposit",
        (cmd.Deposit, app.accounts.deposit),
        requestId=rid,
        subAccountId=t.sub_account_id,
        amount="25",
    )
    assert _wallet_and_entries(app, t.sub_account_id, rid) == (Decimal("1025"), 1)
    # It was VALIDATION_ERROR "ledger entry DEPOSIT for request:... already exists", stored
    # as the request's final result although the deposit was applied.
    assert again["ok"], again
    assert again["data"]["balance"] == "1025"
