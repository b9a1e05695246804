"""What an admin changes outside a booking reaches the running monitor at once.

The monitor's change feed reloads the accounts that booking, order and balance events name.
``update_risk_rules`` and ``freeze``/``unfreeze`` published none of those, so the monitor
kept judging the account by its old thresholds and status until its periodic reload (30 s in
production): thresholds tightened past the account's margin ratio were not enforced, and a
risk document kept the old status.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterator
from decimal import Decimal

import pytest

from pms.commands import schemas as cmd
from pms.domain.enums import AccountStatus
from tests.riskengine.conftest import Harness
from tests.trading.conftest import Trader

D = Decimal


@pytest.fixture
def follow(harness: Harness) -> Iterator[Callable[[], None]]:
    """Starts the harness monitor's change feed (no periodic reload), stopped at the end."""
    stop = threading.Event()
    threads: list[threading.Thread] = []

    def start() -> None:
        subscribed = threading.Event()
        thread = threading.Thread(
            target=harness.monitor.follow_changes,
            args=(stop,),
            kwargs={"on_subscribed": subscribed.set},
        )
        thread.start()
        threads.append(thread)
        assert subscribed.wait(5)

    yield start
    stop.set()
    for thread in threads:
        thread.join(5)


def wait_until(condition: Callable[[], bool], timeout: float = 5.0) -> bool:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            return False
        time.sleep(0.01)
    return True


def admin(
    h: Harness, t: Trader, actor: str, model: type, handler: Callable, **fields: object
) -> None:
    answer = t.send(actor, (model, handler), role="admin", subAccountId=t.sub_account_id, **fields)
    assert answer["ok"], answer


def test_tightened_thresholds_reach_the_monitor_at_once(
    harness: Harness, follow: Callable[[], None]
) -> None:
    h = harness
    t = h.open_long("1000", "0.5", 50)  # loaded by the monitor, as booked
    sub = t.sub_account_id
    follow()
    assert h.monitor.books[sub].thresholds.warning == D("0.70")

    admin(
        h,
        t,
        "update_risk_rules",
        cmd.UpdateRiskRules,
        h.app.accounts.update_risk_rules,
        warningRatio="0.10",
        restrictedRatio="0.20",
    )

    assert wait_until(lambda: h.monitor.books[sub].thresholds.warning == D("0.10")), (
        "the monitor still judges the account by the old rules"
    )
    assert h.monitor.books[sub].thresholds.restricted == D("0.20")


def test_a_freeze_and_an_unfreeze_reach_the_monitor_at_once(
    harness: Harness, follow: Callable[[], None]
) -> None:
    h = harness
    t = h.open_long("1000", "0.1", 10)
    sub = t.sub_account_id
    follow()
    freeze = (cmd.FreezeSubAccount, h.app.accounts.freeze)
    unfreeze = (cmd.FreezeSubAccount, h.app.accounts.unfreeze)

    admin(h, t, "freeze_sub_account", *freeze, reason="review")
    assert wait_until(lambda: h.monitor.books[sub].status is AccountStatus.FROZEN)

    admin(h, t, "unfreeze_sub_account", *unfreeze, reason="cleared")
    assert wait_until(lambda: h.monitor.books[sub].status is AccountStatus.ACTIVE)
