"""An admin freeze that outlives a liquidation.

A liquidation makes a FROZEN account LIQUIDATING and remembers the freeze in its
``liquidation_events`` row (``details.frozen``); its end puts FROZEN back
(pms.riskengine.enforce). While it runs the account's status says LIQUIDATING, so the freeze
is read from, set in and lifted in the account's latest liquidation event: a freeze must not
overwrite LIQUIDATING (a liquidation runs to the end, and the engine takes it up again only
while the status says so).
"""

from __future__ import annotations

from sqlalchemy import select
from sqlalchemy.orm import Session

from pms.db.models import LiquidationEvent

LIQUIDATIONS = ("liquidate_close", "liquidate_takeover")


def latest_liquidation(
    s: Session, sub_account_id: int, *, lock: bool = False
) -> LiquidationEvent | None:
    """The account's latest liquidation event (locked if ``lock``): the one running, or the
    last one that ended while positions were left."""
    query = (
        select(LiquidationEvent)
        .where(
            LiquidationEvent.sub_account_id == sub_account_id,
            LiquidationEvent.action.in_(LIQUIDATIONS),
        )
        .order_by(LiquidationEvent.id.desc())
        .limit(1)
    )
    if lock:
        query = query.with_for_update()
    return s.execute(query).scalar_one_or_none()


def liquidating_frozen(s: Session, sub_account_id: int) -> bool:
    """Whether the liquidation of a LIQUIDATING account started on a frozen one."""
    event = latest_liquidation(s, sub_account_id)
    return bool(event is not None and event.details.get("frozen"))


def lift_liquidation_freeze(s: Session, sub_account_id: int) -> bool:
    """Lift the freeze a LIQUIDATING account's liquidation remembers (caller holds the
    account's lock): the liquidation then ends ACTIVE. False if it remembers none."""
    event = latest_liquidation(s, sub_account_id, lock=True)
    if event is None or not event.details.get("frozen"):
        return False
    event.details = {**event.details, "frozen": False, "unfrozen": True}
    return True


def remember_liquidation_freeze(s: Session, sub_account_id: int) -> bool:
    """Freeze a LIQUIDATING account without ending its liquidation (caller holds the
    account's lock): the status stays LIQUIDATING, so the liquidation is taken up again until
    it is done, and its latest event remembers the freeze, which its end puts back. False if
    the account has no liquidation to remember it in."""
    event = latest_liquidation(s, sub_account_id, lock=True)
    if event is None:
        return False
    details = {k: v for k, v in event.details.items() if k != "unfrozen"}
    event.details = {**details, "frozen": True}
    return True
