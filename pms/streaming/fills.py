"""User-stream events into the engine: fills to the one booking path, order states to
Postgres, both off the event loop and in arrival order.

The reader only enqueues (:meth:`FillSink.order_update`); one worker task takes the events
queued so far, in order, and applies them in a thread (``asyncio.to_thread``), so the
WebSocket loop never waits on Postgres. The events of one take share one transaction (under
load they queue while the previous take is applied, so the cost per fill falls as the rate
rises, without waiting for a batch to fill). If that transaction fails, each event is applied
on its own; a failed event (Postgres restarting) is retried with backoff, not dropped; at
shutdown whatever is left is logged: order-sync books it later (trade ids make it safe).
Publishing a committed take's events (Redis restarting) is retried on its own, with backoff:
applied again, its fills would be found booked and their events never sent.

* ``x == TRADE`` → :func:`pms.execution.booking.book_fills` (idempotent by symbol + trade id,
  so a fill seen on the stream and via REST/order-sync is booked once), then
  :meth:`Notifier.booked` after the commit (events + ``pms:pos:{subAccountId}``);
* any other execution type → :func:`apply_order_update` (status, exchange id, amendments),
  then an ``order_update`` event when something changed.

Only our orders (clientOrderId ``pms-…``) are considered.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import structlog
from sqlalchemy import select
from sqlalchemy.exc import DBAPIError, InterfaceError, OperationalError
from sqlalchemy.orm import Session, sessionmaker

from pms.clock import Clock
from pms.db.models import Order
from pms.db.session import unit_of_work
from pms.domain.enums import OrderStatus
from pms.execution import views
from pms.execution.booking import Booked, book_fills
from pms.execution.notify import Notifier
from pms.streaming.status import FILLS
from pms.streaming.userdata import AccountUpdate, OrderUpdate

log = structlog.get_logger(__name__)

CLIENT_ID_PREFIX = "pms-"
_CLOSING = {
    "CANCELED": OrderStatus.CANCELED,
    "EXPIRED": OrderStatus.EXPIRED,
    "EXPIRED_IN_MATCH": OrderStatus.EXPIRED,
    "REJECTED": OrderStatus.REJECTED,
}


def apply_order_update(
    session: Session, update: OrderUpdate, now: datetime
) -> dict[str, Any] | None:
    """Apply a fill-less ``ORDER_TRADE_UPDATE`` to our order; its view when it changed.

    A closing status (CANCELED/EXPIRED) is taken only once every fill it implies is booked
    (``filled_qty >= z``); until then the order stays open and the TRADE events (or
    order-sync) complete it first. Terminal orders are never reopened.
    """
    order = session.execute(
        select(Order).where(Order.client_order_id == update.client_order_id).with_for_update()
    ).scalar_one_or_none()
    if order is None:
        return None
    changed = False
    if order.exchange_order_id is None:
        order.exchange_order_id = update.exchange_order_id
        changed = True
    status = OrderStatus(order.status)
    if not status.is_open:
        return views.order_view(order) if changed else None
    x = update.execution_type
    if x == "NEW" and status is OrderStatus.PENDING_NEW:
        order.status = OrderStatus.NEW.value
        changed = True
    elif x == "AMENDMENT":
        if update.qty >= order.filled_qty and (update.qty, update.price) != (
            order.qty,
            order.price,
        ):
            order.qty, order.price = update.qty, update.price
            changed = True
    elif update.status in _CLOSING and order.filled_qty >= update.cum_filled:
        order.status = _CLOSING[update.status].value
        changed = True
    if not changed:
        return None
    order.updated_at = now
    return views.order_view(order)


MAX_BATCH = 100
# Attempts at an event that fails for another reason than an unreachable database.
SET_ASIDE_AFTER = 3


def _unreachable(exc: Exception) -> bool:
    """The database (or the way to it) is down: worth retrying for as long as it takes."""
    if isinstance(exc, DBAPIError):
        return exc.connection_invalidated or isinstance(exc, OperationalError | InterfaceError)
    return isinstance(exc, OSError)


@dataclass(frozen=True, slots=True)
class _Notes:
    """What a committed take has to publish: its bookings and the order views that changed."""

    done: list[Booked]
    views: list[dict[str, Any] | None]


class FillSink:
    """Implements :class:`pms.streaming.userdata.UserEventSink`."""

    def __init__(
        self,
        sessions: sessionmaker[Session],
        notifier: Notifier,
        clock: Clock,
        *,
        retry_max_s: float = 5.0,
        to_thread: Callable[..., Any] = asyncio.to_thread,
        linger_s: float = 0.0,
        sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
    ) -> None:
        self._sessions = sessions
        self._notifier = notifier
        self._clock = clock
        self._queue: asyncio.Queue[OrderUpdate] = asyncio.Queue()
        self._retry_max_s = retry_max_s
        self._to_thread = to_thread
        self._linger_s = linger_s
        self._sleep = sleep
        self.booked = 0
        self.duplicates = 0
        self._stopping = False
        self._idle = asyncio.Event()  # no take between its first event and its publishing
        self._idle.set()

    # --- UserEventSink (called on the loop, must not block) --------------------------------
    def order_update(self, update: OrderUpdate) -> None:
        if not update.client_order_id.startswith(CLIENT_ID_PREFIX):
            return
        self._queue.put_nowait(update)

    def account_update(self, update: AccountUpdate) -> None:
        # Sub-account positions come from bookings (the cache is refreshed after each one);
        # the exchange's net position is position-sync's business.
        log.debug(
            "account update",
            reason=update.reason,
            symbols=[p.symbol for p in update.positions],
        )

    # --- worker --------------------------------------------------------------------------
    async def run(self) -> None:
        while not self._stopping:
            batch = [await self._queue.get()]
            self._idle.clear()
            try:
                await self._take(batch)
            finally:
                self._idle.set()

    async def _take(self, batch: list[OrderUpdate]) -> None:
        """Apply and publish one take (``batch`` holds its first event; more join it)."""
        if self._linger_s > 0 and self._queue.empty():
            # A lone event: give the ones right behind it a moment to join the take
            # (a fill's cost falls from ~3 to ~1.3 ms of CPU at four per take).
            await self._sleep(self._linger_s)
        while len(batch) < MAX_BATCH and not self._queue.empty():
            batch.append(self._queue.get_nowait())
        try:
            notes = await self._to_thread(self.apply_batch, batch)
        except Exception:
            log.exception("user events not applied together; applying one by one")
            for update in batch:
                await self._apply_one(update)
        else:
            await self._publish(notes)
        for _ in batch:
            self._queue.task_done()

    async def _apply_one(self, update: OrderUpdate) -> None:
        """One event on its own, retried with backoff while the database is unreachable. An
        event that fails otherwise (its data, a bug) fails the same way every time: after
        ``SET_ASIDE_AFTER`` attempts it is set aside, logged as an error, for order-sync to
        book from REST, instead of holding every later event back for good."""
        delay = 0.1
        failures = 0
        while True:
            try:
                notes = await self._to_thread(self.apply_batch, [update])
                break
            except Exception as exc:
                failures += 0 if _unreachable(exc) else 1
                if failures >= SET_ASIDE_AFTER:
                    FILLS.labels("set_aside").inc()
                    log.exception(
                        "user event set aside after repeated failures; order-sync books it",
                        clientOrderId=update.client_order_id,
                        x=update.execution_type,
                    )
                    return
                log.exception(
                    "user event not applied; retrying",
                    clientOrderId=update.client_order_id,
                    x=update.execution_type,
                )
                await self._sleep(delay)
                delay = min(self._retry_max_s, delay * 2)
        await self._publish(notes)

    async def _publish(self, notes: _Notes) -> None:
        """Publish what a committed take booked, retried with backoff until Redis takes it:
        applied again instead, its fills would be found booked and their events never sent."""
        delay = 0.1
        while True:
            try:
                await self._to_thread(self.publish, notes)
                return
            except Exception:
                log.exception("booked events not published; retrying", bookings=len(notes.done))
                await self._sleep(delay)
                delay = min(self._retry_max_s, delay * 2)

    async def close(self, drain_s: float, finish_s: float = 10.0) -> int:
        """At shutdown: wait up to ``drain_s`` for the queued events, then let the take being
        applied finish, committed and published (up to ``finish_s``), and start no other. A
        take cancelled in its thread would still commit, and its events would never be
        sent. Returns how many events are left (order-sync settles them)."""
        left = await self.drain(drain_s)
        self._stopping = True
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(finish_s):
                await self._idle.wait()
        return left

    async def drain(self, timeout: float) -> int:
        """Wait up to ``timeout`` for queued events; returns how many are left."""
        # asyncio.timeout, not wait_for: on 3.11 wait_for can swallow a cancellation.
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(timeout):
                await self._queue.join()
        left = self._queue.qsize()
        if left:
            log.warning("user events left at shutdown; order-sync will settle them", left=left)
        return left

    def handle(self, update: OrderUpdate) -> None:
        """Blocking: one event in its own transaction, events after the commit."""
        self.handle_batch([update])

    def handle_batch(self, updates: list[OrderUpdate]) -> None:
        """Blocking: :meth:`apply_batch`, then :meth:`publish`."""
        self.publish(self.apply_batch(updates))

    def publish(self, notes: _Notes) -> None:
        """The events and position caches of a committed take."""
        self._notifier.booked_many(notes.done)
        for view in notes.views:
            if view is not None:
                self._notifier.order(view)

    def apply_batch(self, updates: list[OrderUpdate]) -> _Notes:
        """Blocking: the events of one take in one transaction; what to publish after it.

        The fills first, booked together in arrival order (:func:`book_fills`), then the
        fill-less updates in arrival order: a closing status is taken only once the fills it
        implies are booked, so booking first never delays one. A fill-less NEW followed in
        the take by a fill of the same order adds nothing the fill does not set, so it is
        skipped.
        """
        trades = [u.trade for u in updates if u.trade is not None]
        filled = {t.client_order_id for t in trades}
        others = [
            u
            for u in updates
            if u.trade is None and not (u.execution_type == "NEW" and u.client_order_id in filled)
        ]
        with unit_of_work(self._sessions) as s:
            booked = book_fills(s, trades, "stream")
            now = self._clock.now()
            views = [apply_order_update(s, u, now) for u in others]
        done = []
        for trade, result in zip(trades, booked, strict=True):
            if result is None:
                self.duplicates += 1
                FILLS.labels("duplicate").inc()
                continue
            self.booked += 1
            FILLS.labels("booked").inc()
            done.append(result)
            log.info(
                "fill booked from stream",
                subAccountId=result.sub_account_id,
                clientOrderId=trade.client_order_id,
                tradeId=trade.trade_id,
            )
        return _Notes(done, views)
