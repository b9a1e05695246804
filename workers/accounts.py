"""``pms.accounts`` actors (SPEC §3.2). Thin: parse, run once by requestId, answer."""

from __future__ import annotations

from typing import Any

from pms.commands import schemas as cmd
from workers.actors import command_actor
from workers.context import app

ACCOUNTS = command_actor("pms.accounts", time_limit_ms=60_000)


@ACCOUNTS
def create_sub_account(command: dict[str, Any]) -> None:
    a = app()
    a.runner.run("create_sub_account", command, cmd.CreateSubAccount, a.accounts.create)


@ACCOUNTS
def deposit(command: dict[str, Any]) -> None:
    a = app()
    a.runner.run("deposit", command, cmd.Deposit, a.accounts.deposit)


@ACCOUNTS
def withdraw(command: dict[str, Any]) -> None:
    a = app()
    a.runner.run("withdraw", command, cmd.Withdraw, a.accounts.withdraw)


@ACCOUNTS
def update_risk_rules(command: dict[str, Any]) -> None:
    a = app()
    a.runner.run("update_risk_rules", command, cmd.UpdateRiskRules, a.accounts.update_risk_rules)


@ACCOUNTS
def freeze_sub_account(command: dict[str, Any]) -> None:
    a = app()
    a.runner.run("freeze_sub_account", command, cmd.FreezeSubAccount, a.accounts.freeze)


@ACCOUNTS
def unfreeze_sub_account(command: dict[str, Any]) -> None:
    a = app()
    a.runner.run("unfreeze_sub_account", command, cmd.FreezeSubAccount, a.accounts.unfreeze)
