"""The `pms` console script against the real database: each bad input gives one line and no change."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from alembic.script import ScriptDirectory

from pms.config import Settings
from pms.db.migrate import alembic_config

PMS = [sys.executable, "-m", "pms.cli.main"]


def pms(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [*PMS, *args],
        capture_output=True,
        text=True,
        env=os.environ.copy(),
        timeout=60,
        cwd=Path(__file__).parents[2],
    )


def test_db_upgrade_is_idempotent(settings: Settings) -> None:
    head = ScriptDirectory.from_config(alembic_config(settings.database_url)).get_current_head()
    for _ in range(2):
        out = pms("db", "upgrade")
        assert out.returncode == 0, out.stderr
        assert f"database at revision {head}" in out.stdout


def test_account_lifecycle_and_bad_inputs(settings: Settings) -> None:
    created = json.loads(
        pms("account", "create", "--user", "cli-user", "--name", "desk", "--json").stdout
    )
    account_id = str(created["created"]["id"])
    assert (
        json.loads(pms("account", "deposit", account_id, "250.75", "--json").stdout)["balance"]
        == "250.75"
    )
    assert (
        json.loads(pms("account", "withdraw", account_id, "50", "--json").stdout)["balance"]
        == "200.75"
    )

    bad = [
        (("account", "deposit", "999999999", "5"), "does not exist"),
        (("account", "deposit", account_id, "-5"), "positive"),
        (("account", "deposit", account_id, "abc"), "decimal number"),
        (("account", "deposit", account_id, "NaN"), "finite"),
        (("account", "withdraw", account_id, "1000"), "only 200.75 is available"),
        (("account", "show", "x1"), "not a sub-account id"),
    ]
    for args, message in bad:
        out = pms(*args)
        assert out.returncode == 2, (args, out)
        lines = out.stderr.strip().splitlines()
        assert len(lines) == 1 and message in lines[0], (args, out.stderr)

    shown = json.loads(pms("account", "show", account_id, "--json").stdout)
    assert shown["account"]["balance"] == "200.75"
    assert [e["kind"] for e in shown["ledger"]] == ["WITHDRAWAL", "DEPOSIT"]
    listed = json.loads(pms("account", "list", "--user", "cli-user", "--json").stdout)
    assert any(a["id"] == int(account_id) for a in listed["accounts"])
    human = pms("account", "show", account_id)
    assert "balance 200.75 USDT" in human.stdout


@pytest.mark.parametrize("value", ["70000", "nope"])
def test_bad_setting_stops_startup_naming_the_variable(settings: Settings, value: str) -> None:
    env = os.environ.copy() | {"PMS_API_PORT": value}
    out = subprocess.run(
        [*PMS, "account", "list"], capture_output=True, text=True, env=env, timeout=60
    )
    assert out.returncode == 2
    assert "PMS_API_PORT" in out.stderr
