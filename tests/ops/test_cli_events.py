"""A deposit or withdrawal made with the operator CLI changed the wallet without the
``balance_update`` event docs/events.md promises for every ledgered wallet change (the
gateway's deposit/withdraw publish it). The risk monitor reloads a book only on such events
(or its 30 s full reload), and gateway clients never learn of the change."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import orjson
import redis

from pms.config import Settings

ROOT = Path(__file__).parents[2]


def pms(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "pms.cli.main", *args],
        capture_output=True,
        text=True,
        env=os.environ.copy(),
        timeout=60,
        cwd=ROOT,
    )


def _balance_events(client: redis.Redis, stream: str, since: str, account: int) -> list[dict]:
    out = []
    for _id, fields in client.xrange(stream, min=since):
        event = orjson.loads(fields[b"event"])
        if event.get("type") == "balance_update" and event.get("subAccountId") == account:
            out.append(event)
    return out


def test_cli_deposit_and_withdraw_publish_balance_update(
    settings: Settings, redis_client: redis.Redis
) -> None:
    created = pms("account", "create", "--user", "audit-ops", "--name", "events", "--json")
    assert created.returncode == 0, created.stderr
    account = json.loads(created.stdout)["created"]["id"]
    stream = f"{settings.redis_prefix}pms:events"
    last = redis_client.xrevrange(stream, count=1)
    since = "(" + last[0][0].decode() if last else "-"

    done = pms("account", "deposit", str(account), "100")
    assert done.returncode == 0, done.stderr
    done = pms("account", "withdraw", str(account), "40")
    assert done.returncode == 0, done.stderr

    events = _balance_events(redis_client, stream, since, account)
    reasons = sorted(e["data"]["reason"] for e in events)
    assert reasons == ["deposit", "withdrawal"], (
        f"the CLI moved 100 in and 40 out of sub-account {account} but published {events}"
    )
