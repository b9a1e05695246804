"""``pms.trading`` actors. Thin: parse, run once by requestId, answer (SPEC §3.2).

No Dramatiq retries: a retried order would be a new risk decision. A worker that dies
mid-command has its message redelivered by the broker's sweep; the runner then resumes it.
"""

from __future__ import annotations

from typing import Any

from pms.commands import schemas as cmd
from workers.actors import command_actor
from workers.context import app

TRADING = command_actor("pms.trading", time_limit_ms=120_000)


@TRADING
def place_market_order(command: dict[str, Any]) -> None:
    a = app()
    a.runner.run("place_market_order", command, cmd.PlaceMarketOrder, a.orders.place_market)


@TRADING
def place_limit_order(command: dict[str, Any]) -> None:
    a = app()
    a.runner.run("place_limit_order", command, cmd.PlaceLimitOrder, a.orders.place_limit)


@TRADING
def cancel_order(command: dict[str, Any]) -> None:
    a = app()
    a.runner.run("cancel_order", command, cmd.CancelOrder, a.orders.cancel)


@TRADING
def cancel_all_orders(command: dict[str, Any]) -> None:
    a = app()
    a.runner.run("cancel_all_orders", command, cmd.CancelAllOrders, a.orders.cancel_all)


@TRADING
def close_position(command: dict[str, Any]) -> None:
    a = app()
    a.runner.run("close_position", command, cmd.ClosePosition, a.orders.close_position)


@TRADING
def set_leverage(command: dict[str, Any]) -> None:
    a = app()
    a.runner.run("set_leverage", command, cmd.SetLeverage, a.orders.set_leverage)
