"""Funding settlement: each symbol's funding at each funding time, read from the exchange and
shared out to the sub-accounts that held the symbol at that time, exactly once.

Runs periodically (the scheduler's ``settle_funding`` job on ``pms.sync``, every 5 minutes), and
is safe to run twice at once or again later:

1. **What to settle.** The symbols some sub-account holds, or held since the last settlement
   (open positions, positions closed after it). For each, the funding times after its last
   settled one (for a symbol never settled: from the opening of its earliest position still
   relevant, at most :data:`FIRST_LOOKBACK` back) up to :data:`SETTLE_AFTER` ago: fills
   traded before a funding time but booked after it (the stream is milliseconds behind,
   order-sync up to its period) then count. A symbol settled less than :data:`MIN_INTERVAL`
   ago is not asked about.
2. **Rates and what the exchange moved.** ``GET /fapi/v1/fundingRate`` gives each funding's
   rate and mark; ``GET /fapi/v1/income`` (``FUNDING_FEE``) what the master account was
   paid or charged for it. While the books held the symbol, a funding without its income
   record yet waits for it (up to :data:`INCOME_WAIT`), and the later ones behind it.
3. **Holdings at the funding time.** Each sub-account's position then: its open position
   less the fills it traded after the funding time (one statement, one snapshot; the house
   holds positions too).
4. **One transaction per funding time** (:func:`pms.funding.allocate.allocate`): the
   ``funding_settlements`` row first (its key makes a second run, or a concurrent one, skip:
   the later waits on the row and finds it settled), then under the accounts' locks (the
   sub-accounts in id order, the house last, as the booking path takes them) a ``FUNDING``
   entry per holder (ref ``funding`` / ``{symbol}@{fundingTime}``: unique per account) and
   the house's residual (ref ``funding_residual``). A payment may take a wallet below zero;
   an account that no longer holds any position is then made whole by the house (an
   ``INSURANCE`` entry, as a fill's loss is: :func:`pms.execution.booking.absorb_shortfall`).
   ``balance_update`` events follow the commit.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Any

import structlog
from sqlalchemy import text
from sqlalchemy.dialects.postgresql import insert
from sqlalchemy.orm import Session

from pms.accounts.ledger import lock_account, post_entry
from pms.accounts.service import house_account
from pms.app import App
from pms.db.models import FundingSettlement
from pms.db.session import unit_of_work
from pms.domain.enums import LedgerKind
from pms.domain.numbers import to_wire
from pms.errors import PmsError, RateLimited
from pms.exchange.model import FundingIncome, FundingRate
from pms.execution import views
from pms.execution.booking import absorb_shortfall
from pms.execution.context import open_positions
from pms.funding.allocate import Allocation, allocate, implied_mark
from pms.messaging.events import EventType

log = structlog.get_logger(__name__)

SETTLE_AFTER = timedelta(minutes=3)
FIRST_LOOKBACK = timedelta(days=7)
# The exchange's income record of a funding carries the funding time, or a little after it
# (Binance: up to a minute's deviation in the actual transaction time).
INCOME_BEFORE_MS = 5_000
INCOME_AFTER_MS = 5 * 60_000
# While the books hold the symbol at a funding time, the master account must have been
# charged or paid: without its income record yet, the funding waits this long for it (then
# it is settled as nothing moved, the house taking the sub-accounts' share as residual).
INCOME_WAIT = timedelta(minutes=30)
# Binance's shortest funding interval: no symbol has a funding sooner after its last one.
MIN_INTERVAL = timedelta(hours=1)

Event = tuple[EventType, int, dict[str, Any]]

_HOLDINGS = text(
    """
SELECT sub_account_id, sum(q) FROM (
  SELECT sub_account_id, qty AS q FROM positions WHERE symbol = :symbol AND closed_at IS NULL
  UNION ALL
  SELECT sub_account_id, CASE side WHEN 'BUY' THEN -qty ELSE qty END FROM fills
    WHERE symbol = :symbol AND traded_at > :at
) h GROUP BY sub_account_id HAVING sum(q) <> 0
"""
)


@dataclass
class FundingReport:
    settled: list[dict[str, Any]] = field(default_factory=list)
    # Funding times whose income record the next runs wait for ("{symbol}@{ms}").
    waiting: list[str] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)

    def as_dict(self) -> dict[str, Any]:
        return {"settled": self.settled, "waiting": self.waiting, "errors": self.errors}


_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_MS = timedelta(milliseconds=1)


def _ms(at: datetime) -> int:
    """Epoch milliseconds, exactly (no float: a funding time must map back to itself)."""
    return (at - _EPOCH) // _MS


def _at(ms: int) -> datetime:
    return _EPOCH + ms * _MS


def holdings_at(s: Session, symbol: str, at: datetime) -> dict[int, Decimal]:
    """Every sub-account's position in ``symbol`` at ``at`` (non-zero ones): the open
    position less the fills traded after ``at``."""
    return {int(a): Decimal(q) for a, q in s.execute(_HOLDINGS, {"symbol": symbol, "at": at})}


_DUE = text(
    """
SELECT p.symbol, min(p.opened_at), f.last
FROM positions p
LEFT JOIN (SELECT symbol, max(funding_time) AS last FROM funding_settlements GROUP BY symbol) f
  ON f.symbol = p.symbol
WHERE p.closed_at IS NULL OR p.closed_at > coalesce(f.last, :lookback)
GROUP BY p.symbol, f.last
"""
)


def due(s: Session, now: datetime) -> dict[str, tuple[int, datetime | None]]:
    """The symbols to look at and, for each, the first funding time (ms) not yet settled and
    the last settled one (None: never):
    those held now, or held since the symbol's last settlement (never settled: within
    :data:`FIRST_LOOKBACK`), from just after that settlement (never settled: from the
    opening of the earliest such position)."""
    lookback = now - FIRST_LOOKBACK
    out = {}
    for symbol, opened, last in s.execute(_DUE, {"lookback": lookback}):
        start = _ms(last) + 1 if last is not None else _ms(max(opened, lookback))
        out[symbol] = (start, last)
    return out


def settle_funding(
    app: App, symbol: str | None = None, *, min_interval: timedelta = MIN_INTERVAL
) -> FundingReport:
    """Settle every funding time due (of ``symbol`` only, when given). A symbol settled less
    than ``min_interval`` ago is not asked about (the simulator's admin settlements may come
    minutes apart: its tests pass a shorter one)."""
    report = FundingReport()
    now = app.clock.now()
    until_ms = _ms(now - SETTLE_AFTER)
    with unit_of_work(app.sessions) as s:
        starts = due(s, now)
    for sym, (start_ms, last) in sorted(starts.items()):
        if symbol is not None and sym != symbol:
            continue
        if start_ms > until_ms or (last is not None and _ms(last + min_interval) > until_ms):
            continue  # settled less than an hour ago: no funding can have come since
        try:
            _settle_symbol(app, report, sym, start_ms, until_ms, now)
        except RateLimited as exc:
            # Calling on after a 429 is what earns an IP ban (418), which would stop every
            # call of the engine, orders and liquidations included: the next run goes on.
            report.errors.append(f"{sym}: {exc.code} {exc.message}; run stopped")
            break
        except Exception as exc:  # one symbol's failure must not starve the others
            log.exception("funding settlement of a symbol failed", symbol=sym)
            code = exc.code if isinstance(exc, PmsError) else type(exc).__name__
            report.errors.append(f"{sym}: {code} {exc}")
    if report.settled or report.errors or report.waiting:
        log.info("funding settled", **report.as_dict())
    return report


def _settle_symbol(
    app: App, report: FundingReport, symbol: str, start_ms: int, until_ms: int, now: datetime
) -> None:
    """The funding times of one symbol from ``start_ms`` to ``until_ms``, oldest first; stops
    at one whose income record must still be waited for (a later one settled first would
    leave it behind for good: a symbol is due from its last settled funding time)."""
    # From a little earlier: the fundings just before these are what an income record near
    # the first of them may belong to instead.
    known = app.exchange.fetch_funding_rates(symbol, start_ms - INCOME_AFTER_MS, until_ms)
    rates = [r for r in known if r.funding_time_ms >= start_ms]
    if not rates:
        return
    incomes = app.exchange.fetch_funding_income(
        symbol,
        rates[0].funding_time_ms - INCOME_BEFORE_MS,
        rates[-1].funding_time_ms + INCOME_AFTER_MS,
    )
    amounts = _incomes_by_funding(known, incomes)
    for rate in rates:
        waited = now - _at(rate.funding_time_ms) >= INCOME_WAIT
        try:
            settled = settle_one(app, rate, amounts.get(rate.funding_time_ms), waited=waited)
        except IncomeNotYetSeen:
            report.waiting.append(f"{symbol}@{rate.funding_time_ms}")
            return
        if settled is not None:
            report.settled.append(settled)


def _incomes_by_funding(
    rates: list[FundingRate], incomes: list[FundingIncome]
) -> dict[int, Decimal]:
    """What the master account was paid or charged at each funding time, for those it has
    an income record of. A record carries its funding's time; one that does not goes to the
    latest funding time before it (within :data:`INCOME_AFTER_MS`), else to one just after it
    (within :data:`INCOME_BEFORE_MS`)."""
    out: dict[int, Decimal] = {}
    times = sorted(r.funding_time_ms for r in rates)
    exact = set(times)
    for income in incomes:
        t = income.time_ms
        if t in exact:
            funding: int | None = t
        else:
            before = [f for f in times if t - INCOME_AFTER_MS <= f < t]
            after = [f for f in times if t < f <= t + INCOME_BEFORE_MS]
            funding = before[-1] if before else (after[0] if after else None)
        if funding is not None:
            out[funding] = out.get(funding, Decimal(0)) + income.amount
    return out


class IncomeNotYetSeen(Exception):
    """The books held the symbol at a funding time the exchange shows no income for yet."""


def settle_one(
    app: App, rate: FundingRate, exchange_amount: Decimal | None, *, waited: bool = True
) -> dict[str, Any] | None:
    """Settle one funding time of one symbol; None if it was settled already.

    ``exchange_amount``: what the master account was paid or charged (None: no income record
    of it). Without one while the books held the symbol, :class:`IncomeNotYetSeen` unless
    ``waited`` (then it is taken as nothing moved)."""
    at = _at(rate.funding_time_ms)
    ref = f"{rate.symbol}@{rate.funding_time_ms}"
    events: list[Event] = []
    with unit_of_work(app.sessions) as s:
        holdings = holdings_at(s, rate.symbol, at)
        net = sum(holdings.values(), start=Decimal(0))
        if exchange_amount is None:
            if net != 0 and not waited:
                raise IncomeNotYetSeen(ref)
            exchange_amount = Decimal(0)
        mark = rate.mark_price or implied_mark(exchange_amount, net, rate.rate)
        if mark is None:
            # No mark in the record and none to be worked back (the master held nothing, or
            # the rate was 0): the current mark stands in; the residual absorbs the gap.
            mark = app.prices.mark(rate.symbol)
            log.warning("funding settled at the current mark", symbol=rate.symbol, ref=ref)
        shares = allocate(holdings, mark, rate.rate, exchange_amount)
        claimed = s.execute(
            insert(FundingSettlement)
            .values(
                symbol=rate.symbol,
                funding_time=at,
                rate=rate.rate,
                mark_price=mark,
                exchange_amount=exchange_amount,
                allocated=shares.allocated,
                house_residual=shares.residual,
                accounts=len(shares.fees),
            )
            .on_conflict_do_nothing()
            .returning(FundingSettlement.symbol)
        ).first()
        if claimed is None:
            return None
        _post(s, shares, ref, rate, mark, events)
    for type_, sub_account_id, data in events:
        app.notifier.event(type_, sub_account_id, data)
    return {
        "symbol": rate.symbol,
        "fundingTime": rate.funding_time_ms,
        "rate": to_wire(rate.rate),
        "markPrice": to_wire(mark),
        "exchangeAmount": to_wire(exchange_amount),
        "allocated": to_wire(shares.allocated),
        "houseResidual": to_wire(shares.residual),
        "accounts": len(shares.fees),
    }


def _post(
    s: Session,
    shares: Allocation,
    ref: str,
    rate: FundingRate,
    mark: Decimal,
    events: list[Event],
) -> None:
    house = house_account(s)
    note = f"funding {to_wire(rate.rate)} at mark {to_wire(mark)}"
    shortfalls: list[tuple[int, Decimal]] = []
    for sub_account_id in sorted(a for a in shares.fees if a != house.id):
        account = lock_account(s, sub_account_id)
        fee = shares.fees[sub_account_id]
        post_entry(
            s, account, LedgerKind.FUNDING, fee, ref_type="funding", ref_id=ref, note=note,
            allow_negative=True,
        )  # fmt: skip
        events.append(
            (EventType.BALANCE_UPDATE, account.id, views.balance_view(account, fee, "funding"))
        )
        if account.wallet_balance < 0 and not open_positions(s, account.id):
            # Flat and below zero: the house insures the rest, as for a fill's loss.
            shortfall = -account.wallet_balance
            post_entry(
                s, account, LedgerKind.INSURANCE, shortfall, ref_type="funding", ref_id=ref,
                note="funding beyond the balance of a flat account",
            )  # fmt: skip
            events.append(
                (
                    EventType.BALANCE_UPDATE,
                    account.id,
                    views.balance_view(account, shortfall, "insurance"),
                )
            )
            shortfalls.append((account.id, shortfall))
    # The house last, as the booking path locks it.
    for sub_account_id, shortfall in shortfalls:
        absorb_shortfall(
            s, sub_account_id, shortfall, ref_type="funding", ref_id=ref, events=events
        )
    house = lock_account(s, house.id)
    for kind_ref, amount in (
        ("funding", shares.fees.get(house.id)),
        ("funding_residual", shares.residual),
    ):
        if amount:
            post_entry(
                s, house, LedgerKind.FUNDING, amount, ref_type=kind_ref, ref_id=ref, note=note
            )
            events.append(
                (EventType.BALANCE_UPDATE, house.id, views.balance_view(house, amount, "funding"))
            )
