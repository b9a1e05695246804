"""End to end: ``pms up`` in a temporary directory, ``pms demo`` against it, Ctrl-C.

Exit codes 0, no process of the group left, and the demo's summary (built from the events a
gateway saw) equals what Postgres holds.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
import urllib.request
import uuid
from collections.abc import Iterator
from decimal import Decimal
from pathlib import Path
from typing import Any

import orjson
import pytest
from sqlalchemy import create_engine, func, select

from pms.config import Settings
from pms.db.models import Fill, LiquidationEvent, Position, SubAccount
from tests.conftest import create_database, drop_database
from tests.ops.conftest import free_port

READY_TIMEOUT_S = 90


def descendants(pid: int) -> set[int]:
    """Every live process below ``pid`` (by /proc parent links; zombies excluded)."""
    parents: dict[int, int] = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text().rsplit(")", 1)[1].split()
        except (FileNotFoundError, ProcessLookupError):
            continue
        if stat[0] != "Z":
            parents[int(entry.name)] = int(stat[1])
    found: set[int] = set()
    frontier = {pid}
    while frontier:
        frontier = {p for p, parent in parents.items() if parent in frontier} - found
        found |= frontier
    return found


def alive(pid: int) -> bool:
    try:
        return (Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]) != "Z"
    except (FileNotFoundError, ProcessLookupError):
        return False


@pytest.fixture
def up_env(settings: Settings, tmp_path: Path) -> Iterator[dict[str, str]]:
    name = f"pms_up_{uuid.uuid4().hex[:8]}"
    url = create_database(name)
    env = {
        **os.environ,
        "PMS_DATABASE_URL": url,
        "PMS_REDIS_PREFIX": f"{settings.redis_prefix}{name}:",
        "PMS_DRAMATIQ_NAMESPACE": f"{settings.dramatiq_namespace}-{name}",
        "PMS_SIM_URL": f"http://127.0.0.1:{free_port()}",
        "PMS_API_PORT": str(free_port()),
        "PMS_DATA_DIR": str(tmp_path / "var"),
    }
    yield env
    drop_database(name)


def wait_ready(url: str, proc: subprocess.Popen[bytes]) -> float:
    started = time.monotonic()
    while time.monotonic() - started < READY_TIMEOUT_S:
        assert proc.poll() is None, "pms up exited"
        try:
            with urllib.request.urlopen(url, timeout=2) as response:
                if response.status == 200:
                    return time.monotonic() - started
        except OSError:
            pass
        time.sleep(0.25)
    raise AssertionError(f"not ready in {READY_TIMEOUT_S} s")


def postgres_view(url: str, sub: int) -> dict[str, Any]:
    engine = create_engine(url)
    try:
        with engine.connect() as conn:
            wallet = conn.execute(
                select(SubAccount.wallet_balance).where(SubAccount.id == sub)
            ).scalar_one()
            open_positions = conn.execute(
                select(Position.symbol, Position.qty).where(
                    Position.sub_account_id == sub, Position.closed_at.is_(None), Position.qty != 0
                )
            ).all()
            realized, fees = conn.execute(
                select(
                    func.coalesce(func.sum(Fill.realized_pnl), 0),
                    func.coalesce(func.sum(Fill.fee), 0),
                ).where(Fill.sub_account_id == sub)
            ).one()
            actions = conn.execute(
                select(LiquidationEvent.action)
                .where(LiquidationEvent.sub_account_id == sub)
                .where(LiquidationEvent.action.like("liquidate%"))
                .order_by(LiquidationEvent.id)
            ).scalars()
            return {
                "wallet": Decimal(wallet),
                "positions": {s: Decimal(q) for s, q in open_positions},
                "realizedPnl": Decimal(realized),
                "fees": Decimal(fees),
                "liquidations": list(dict.fromkeys(actions)),
            }
    finally:
        engine.dispose()


def test_up_then_demo_then_ctrl_c(up_env: dict[str, str], tmp_path: Path) -> None:
    log = (tmp_path / "up.log").open("wb")
    up = subprocess.Popen(
        [sys.executable, "-m", "pms.cli.main", "up"],
        cwd=tmp_path,
        env=up_env,
        stdout=log,
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )
    try:
        took = wait_ready(f"http://127.0.0.1:{up_env['PMS_API_PORT']}/ready", up)
        print(f"pms up ready in {took:.1f} s")
        members = descendants(up.pid)
        # sim, streamer, scheduler, api, two worker masters and their worker processes
        assert len(members) >= 8, members
        demo = subprocess.run(
            [sys.executable, "-m", "pms.cli.main", "demo", "--json"],
            cwd=tmp_path,
            env=up_env,
            capture_output=True,
            timeout=180,
        )
        sys.stderr.write(demo.stderr.decode())
        assert demo.returncode == 0, (tmp_path / "up.log").read_text()[-5000:]
    finally:
        up.send_signal(signal.SIGINT)
        code = up.wait(60)
        log.close()
    assert code == 0, (tmp_path / "up.log").read_text()[-3000:]
    time.sleep(0.5)
    left = [p for p in members if alive(p)]
    assert not left, f"processes left behind: {left}"

    summary = orjson.loads(demo.stdout)
    roles = {row["role"]: row for row in summary["accounts"]}
    assert set(roles) == {"alice", "bob", "carol"}
    assert roles["alice"]["liquidations"] == ["liquidate_close"]
    assert roles["bob"]["liquidations"] == ["liquidate_takeover"]
    for row in summary["accounts"]:
        db = postgres_view(up_env["PMS_DATABASE_URL"], row["subAccountId"])
        assert Decimal(row["wallet"]) == db["wallet"], row
        assert {s: Decimal(q) for s, q in row["positions"].items()} == db["positions"], row
        assert Decimal(row["realizedPnl"]) == db["realizedPnl"], row
        assert Decimal(row["fees"]) == db["fees"], row
        assert row["liquidations"] == db["liquidations"], row
    assert "carol" in roles and roles["carol"]["events"]["trade_fill"] == 2
