"""Operator CLI at the edge: money moves only when the engine's own guards allow them, and
bad input or an unreachable dependency gives one line on stderr and exit code 2 (README:
"Bad input gives one line on stderr, exit code 2, and changes nothing")."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from decimal import Decimal
from pathlib import Path

import orjson
import redis
from sqlalchemy.orm import Session, sessionmaker

from pms.accounts import service
from pms.config import Settings
from pms.db.models import Position
from pms.db.session import unit_of_work
from pms.marketdata.prices import price_key
from tests.factories import funded_account

ROOT = Path(__file__).parents[2]
DOWN_DB = "postgresql://postgres:hunter2@127.0.0.1:5999/pms_audit_down"


def pms(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "pms.cli.main", *args],
        capture_output=True,
        text=True,
        env={**os.environ, **(env or {})},
        timeout=90,
        cwd=ROOT,
    )


def _one_clear_line(done: subprocess.CompletedProcess[str]) -> None:
    assert "Traceback" not in done.stderr, done.stderr[-600:]
    assert done.returncode == 2, (done.returncode, done.stderr[-300:])
    assert len(done.stderr.strip().splitlines()) == 1, done.stderr


def test_cli_withdraw_refuses_money_that_covers_an_unrealized_loss(
    settings: Settings, session_factory: sessionmaker[Session]
) -> None:
    # wallet 1000; long 0.1 BTC at 60000, 10x; mark 52000: uPnL -800, equity 200, initial
    # margin at mark 520: nothing is available. The gateway's withdraw (even as admin)
    # refuses; the operator CLI only subtracts margin at entry (600) and pays out 400,
    # leaving equity at -200: the house's insurance pays for it at liquidation.
    account, _user = funded_account(session_factory, "1000")
    with unit_of_work(session_factory) as s:
        s.add(
            Position(
                sub_account_id=account,
                symbol="BTC/USDT:USDT",
                qty=Decimal("0.1"),
                entry_price=Decimal("60000"),
                leverage=10,
            )
        )
    client = redis.Redis.from_url(settings.redis_url)
    now = int(time.time() * 1000)
    client.set(
        price_key(settings.redis_prefix, "BTC/USDT:USDT"),
        orjson.dumps({"mark": "52000", "index": "52000", "bid": None, "ask": None, "ts": now}),
        px=120_000,
    )
    client.close()

    done = pms("account", "withdraw", str(account), "400", "--json")

    with unit_of_work(session_factory) as s:
        balance = service.get_account(s, account).wallet_balance
    assert balance == Decimal("1000"), (
        f"withdrew from an account whose equity (200) is below its margin: balance now "
        f"{balance}; stdout={done.stdout.strip()!r}"
    )
    assert done.returncode == 2, done


def test_api_with_an_out_of_range_port_is_one_line_exit_2(settings: Settings) -> None:
    _one_clear_line(pms("api", "--port", "70000"))


def test_db_current_with_postgres_down_is_one_line_exit_2(settings: Settings) -> None:
    done = pms("db", "current", env={"PMS_DATABASE_URL": DOWN_DB})
    assert "hunter2" not in done.stderr + done.stdout
    _one_clear_line(done)


def test_order_resync_with_postgres_down_is_one_line_exit_2(settings: Settings) -> None:
    done = pms(
        "order", "resync", "1", "--since", "2020-01-01T00:00:00Z", env={"PMS_DATABASE_URL": DOWN_DB}
    )
    assert "hunter2" not in done.stderr + done.stdout
    _one_clear_line(done)


def test_cli_refuses_an_owner_id_no_gateway_command_can_carry(settings: Settings) -> None:
    # The gateway's userId is 1-64 printable ASCII without spaces (pms.commands.schemas);
    # an account the CLI creates for "bob smith" can never be used by its owner.
    done = pms("account", "create", "--user", "bob smith", "--name", "x", "--json")
    created = json.loads(done.stdout)["created"]["id"] if done.returncode == 0 else None
    assert done.returncode == 2, f"created sub-account {created} for 'bob smith'"
