"""When enforcement holds a new ADL cut or liquidation back, and for how long.

Two reasons, both judged under the sub-account's lock just before a new action is recorded
(an action already recorded is always resumed; nothing here delays it):

- **Market orders in flight.** An order sent and acknowledged but whose fills are not booked
  yet (the user stream books them a few milliseconds later; order-sync if the stream missed
  them) will move the position. Every plan is worked from the booked positions: a
  liquidation's closes would be refused (with the order in flight, its reduce-only qty
  exceeds what is left of the position: a FAILED event per second until the fill is booked),
  an ADL cut would be cut again on top of one not yet booked, and a takeover would hand the
  house a position the booking then reopens on the account. So the action waits for the
  booking; its reload asks for enforcement again (and the monitor asks every second while
  the account is past ADL1 or LIQUIDATING). Only orders placed less than
  :data:`IN_FLIGHT_MAX` ago count: one open longer is stuck, not in flight.
- **A run of failures.** An action that ended FAILED was refused for a reason retrying does
  not cure (an exchange refusal, a plan larger than the position). Starting the next one at
  every re-enforcement (once a second) sends the same refused orders each second, for every
  account in that state, against the master account's order rate limit, which all
  sub-accounts share. After ``n`` FAILED actions of one kind in a row, the next one starts
  :func:`backoff_delay` ``(n)`` after the last one ended: 1 s, 2 s, 4 s, … at most 60 s. A
  DONE action of that kind ends the run.
"""

from __future__ import annotations

from datetime import datetime, timedelta

from sqlalchemy import text
from sqlalchemy.orm import Session

from pms.execution.context import OPEN_STATUSES_SQL

BACKOFF_FIRST = timedelta(seconds=1)
BACKOFF_MAX = timedelta(seconds=60)
# Enough failures to reach the cap: 1 · 2^6 = 64 s > 60 s.
STREAK_LIMIT = 7

# How long a market order may stay unsettled and still hold an action back: the stream
# books a fill within milliseconds, order-sync (every 30 s) within a minute. One open longer
# is stuck (order-sync reports it ``unbooked``: closed on the exchange with fills it cannot
# find), and must not hold a liquidation back for ever: the action goes ahead without it.
IN_FLIGHT_MAX = timedelta(minutes=2)

_IN_FLIGHT = text(
    f"SELECT count(*) FROM orders WHERE sub_account_id = :id AND type = 'MARKET'"  # noqa: S608
    f" AND status IN ({OPEN_STATUSES_SQL})"  # (the statuses are the enum's own values)
    " AND created_at > now() - make_interval(secs => :max_s)"
)
_LAST_ENDED = text(
    "SELECT status, completed_at FROM liquidation_events"
    " WHERE sub_account_id = :id AND action = ANY(:actions) AND status <> 'PENDING'"
    " ORDER BY id DESC LIMIT :limit"
)


def backoff_delay(failures: int) -> timedelta:
    """How long after the last of ``failures`` FAILED actions in a row the next may start."""
    if failures <= 0:
        return timedelta(0)
    return min(BACKOFF_MAX, BACKOFF_FIRST * (1 << min(failures - 1, STREAK_LIMIT)))


def failed_run(rows: list[tuple[str, datetime | None]]) -> tuple[int, datetime | None]:
    """The FAILED actions in a row at the head of ``rows`` (newest first) and when the newest
    of them ended."""
    count = 0
    for status, _ in rows:
        if status != "FAILED":
            break
        count += 1
    return count, (rows[0][1] if count else None)


def markets_in_flight(s: Session, sub_account_id: int) -> int:
    """The sub-account's market orders sent but not yet settled (their fills not booked),
    placed less than :data:`IN_FLIGHT_MAX` ago (the database's clock, as ``created_at``)."""
    params = {"id": sub_account_id, "max_s": IN_FLIGHT_MAX.total_seconds()}
    return int(s.execute(_IN_FLIGHT, params).scalar_one())


def hold_reason(
    s: Session, sub_account_id: int, actions: tuple[str, ...], now: datetime
) -> str | None:
    """Why a new action of one of ``actions`` must not start now, or None."""
    flying = markets_in_flight(s, sub_account_id)
    if flying:
        return f"waiting for {flying} market order(s) in flight to be booked"
    rows = s.execute(
        _LAST_ENDED, {"id": sub_account_id, "actions": list(actions), "limit": STREAK_LIMIT}
    ).all()
    failures, last = failed_run([(r[0], r[1]) for r in rows])
    if not failures or last is None:
        return None
    due = last + backoff_delay(failures)
    if now >= due:
        return None
    wait = (due - now).total_seconds()
    return f"backing off after {failures} failed in a row: next attempt in {wait:.3f} s"
