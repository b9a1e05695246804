"""``pms.accounts`` actors (SPEC §3.2). Thin: parse, run once by requestId, answer."""

from __future__ import annotations

from typing import Any

import dramatiq

from pms.commands import schemas as cmd
from workers.context import app

ACCOUNTS = {"queue_name": "pms.accounts", "max_retries": 0, "time_limit": 60_000}


@dramatiq.actor(**ACCOUNTS)
def create_sub_account(command: dict[str, Any]) -> None:
    a = app()
    a.runner.run("create_sub_account", command, cmd.CreateSubAccount, a.accounts.create)


@dramatiq.actor(**ACCOUNTS)
def deposit(command: dict[str, Any]) -> None:
    a = app()
    a.runner.run("deposit", command, cmd.Deposit, a.accounts.deposit)


@dramatiq.actor(**ACCOUNTS)
def withdraw(command: dict[str, Any]) -> None:
    a = app()
    a.runner.run("withdraw", command, cmd.Withdraw, a.accounts.withdraw)


@dramatiq.actor(**ACCOUNTS)
def update_risk_rules(command: dict[str, Any]) -> None:
    a = app()
    a.runner.run("update_risk_rules", command, cmd.UpdateRiskRules, a.accounts.update_risk_rules)


@dramatiq.actor(**ACCOUNTS)
def freeze_sub_account(command: dict[str, Any]) -> None:
    a = app()
    a.runner.run("freeze_sub_account", command, cmd.FreezeSubAccount, a.accounts.freeze)


@dramatiq.actor(**ACCOUNTS)
def unfreeze_sub_account(command: dict[str, Any]) -> None:
    a = app()
    a.runner.run("unfreeze_sub_account", command, cmd.FreezeSubAccount, a.accounts.unfreeze)
