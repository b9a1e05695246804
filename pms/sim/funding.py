"""Funding: each symbol's rate settled against the master account's position every 8 hours.

Funding times are the multiples of 8 h since the epoch (00:00, 08:00, 16:00 UTC), the
``nextFundingTime`` that ``premiumIndex`` and the markPrice stream announce. At each one,
every symbol gets a history record (``GET /fapi/v1/fundingRate``) and a non-zero one-way
position pays or receives ``fee = -amt * mark * rate``, rounded half-even to 8 decimals
(a long pays when the rate is positive): the wallet moves by ``fee``, an income entry is
written (``GET /fapi/v1/income``) and the user stream gets an ``ACCOUNT_UPDATE`` with reason
``FUNDING_FEE``.

The simulator keeps no mark history: a funding time the clock jumped over is settled, at its
own time, with the mark and rate of the moment the jump is seen.
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass
from decimal import Decimal
from typing import Protocol

from pms.domain.numbers import money, parse_decimal
from pms.sim.account import Account, m8
from pms.sim.market import Market

FUNDING_INTERVAL_MS = 8 * 60 * 60 * 1000
MAX_RATE = Decimal("0.03")
RATE_PLACES = 8
INCOME_WINDOW_MS = 7 * 24 * 60 * 60 * 1000  # /fapi/v1/income without startTime/endTime
FUNDING_FEE = "FUNDING_FEE"
# Binance's income types: the simulator writes FUNDING_FEE only (commissions and realised
# PnL are in userTrades), so any other known type answers an empty list.
INCOME_TYPES = frozenset(
    {
        "TRANSFER", "WELCOME_BONUS", "REALIZED_PNL", FUNDING_FEE, "COMMISSION",
        "INSURANCE_CLEAR", "REFERRAL_KICKBACK", "COMMISSION_REBATE", "API_REBATE",
        "CONTEST_REWARD", "CROSS_COLLATERAL_TRANSFER", "OPTIONS_PREMIUM_FEE",
        "OPTIONS_SETTLE_PROFIT", "INTERNAL_TRANSFER", "AUTO_EXCHANGE",
        "DELIVERED_SETTELMENT", "COIN_SWAP_DEPOSIT", "COIN_SWAP_WITHDRAW",
        "POSITION_LIMIT_INCREASE_FEE", "STRATEGY_UMFUTURES_TRANSFER", "FEE_RETURN",
        "BFUSD_REWARD",
    }
)  # fmt: skip


def next_funding_time(now_ms: int) -> int:
    """The first funding time strictly after ``now_ms``."""
    return (now_ms // FUNDING_INTERVAL_MS + 1) * FUNDING_INTERVAL_MS


def parse_rate(value: object) -> Decimal:
    """An admin rate: a finite decimal string, ``|rate| <= 0.03``, at most 8 decimals.

    Returned with exactly 8 decimals (``"0.0001"`` -> ``Decimal("0.00010000")``), so the rate
    shown on the wire is the rate settled. Raises ``ValueError`` naming the problem.
    """
    if not isinstance(value, str):
        raise ValueError("rate must be a decimal string")
    rate = parse_decimal(value, "rate")
    if abs(rate) > MAX_RATE:
        raise ValueError(f"rate must be within -{MAX_RATE}..{MAX_RATE}")
    exact = money(rate, RATE_PLACES)
    if exact != rate:
        raise ValueError(f"rate has more than {RATE_PLACES} decimal places")
    return exact


@dataclass(frozen=True, slots=True)
class FundingRecord:
    symbol: str
    time: int
    rate: Decimal
    mark: Decimal

    def payload(self) -> dict[str, object]:
        """``GET /fapi/v1/fundingRate`` item::

        {"symbol":"BTCUSDT","fundingRate":"0.00010000","fundingTime":1767225600000,
         "markPrice":"60000.00000000"}
        """
        return {
            "symbol": self.symbol,
            "fundingRate": m8(self.rate),
            "fundingTime": self.time,
            "markPrice": m8(self.mark),
        }


@dataclass(frozen=True, slots=True)
class Income:
    tran_id: int
    symbol: str
    amount: Decimal
    time: int
    kind: str = FUNDING_FEE

    def payload(self) -> dict[str, object]:
        """``GET /fapi/v1/income`` item::

        {"symbol":"BTCUSDT","incomeType":"FUNDING_FEE","income":"-6.00000000","asset":"USDT",
         "info":"FUNDING_FEE","time":1767225600000,"tranId":1767225600000001,"tradeId":""}
        """
        return {
            "symbol": self.symbol,
            "incomeType": self.kind,
            "income": m8(self.amount),
            "asset": "USDT",
            "info": self.kind,
            "time": self.time,
            "tranId": self.tran_id,
            "tradeId": "",
        }


class Sink(Protocol):
    def user_event(self, event: dict[str, object]) -> None: ...


class Funding:
    """Rates, the settlement schedule, and the funding and income histories.

    Both histories are kept in time order: a manual settlement first settles every
    scheduled time already due (see :meth:`settle_now`).
    """

    def __init__(
        self,
        markets: dict[str, Market],
        account: Account,
        sink: Sink,
        start_ms: int,
        id_base: int,
    ) -> None:
        self.markets = markets
        self.account = account
        self.sink = sink
        self.next_time = next_funding_time(start_ms)  # nothing before the start is settled
        self.history: list[FundingRecord] = []
        self.income: list[Income] = []
        self._tran_ids = itertools.count(id_base + 1)

    def set_rate(self, symbol: str, rate: Decimal) -> None:
        self.markets[symbol].funding_rate = rate

    # --- settlement ----------------------------------------------------------------------
    def catch_up(self, now_ms: int) -> list[int]:
        """Settle every scheduled funding time up to ``now_ms``; the times settled."""
        done = []
        while self.next_time <= now_ms:
            self.settle(self.next_time)
            done.append(self.next_time)
            self.next_time += FUNDING_INTERVAL_MS
        return done

    def settle_now(self, now_ms: int) -> dict[str, Decimal]:
        """Admin: settle every symbol at ``now_ms``, off the schedule."""
        self.catch_up(now_ms)
        return self.settle(now_ms)

    def settle(self, when: int) -> dict[str, Decimal]:
        """One settlement at ``when``; the non-zero fees by symbol."""
        fees: dict[str, Decimal] = {}
        for symbol, market in self.markets.items():
            rate, mark = market.funding_rate, market.mark
            self.history.append(FundingRecord(symbol, when, rate, mark))
            fee = money(-self.account.positions[symbol].amt * mark * rate, 8)
            if fee == 0:
                continue
            self.account.apply_funding(fee, when)
            self.income.append(Income(next(self._tran_ids), symbol, fee, when))
            # A cross-margin FUNDING_FEE update carries the balance only (no "P" items).
            self.sink.user_event(self.account.account_update([], when, FUNDING_FEE, fee))
            fees[symbol] = fee
        return fees

    # --- queries -------------------------------------------------------------------------
    def rates(
        self, symbol: str | None, start: int | None, end: int | None, limit: int
    ) -> list[FundingRecord]:
        """``fundingRate``: from ``start`` the first ``limit``; otherwise the last ``limit``."""
        rows = [
            r for r in self.history
            if (symbol is None or r.symbol == symbol)
            and (start is None or r.time >= start) and (end is None or r.time <= end)
        ]  # fmt: skip
        return rows[:limit] if start is not None else rows[-limit:]

    def incomes(
        self,
        symbol: str | None,
        kind: str | None,
        start: int | None,
        end: int | None,
        limit: int,
        page: int,
        now_ms: int,
    ) -> list[Income]:
        """``income``: oldest first within the window (the last 7 days when neither bound is
        given), ``limit`` per ``page``."""
        if start is None and end is None:
            start, end = now_ms - INCOME_WINDOW_MS, now_ms
        rows = [
            i for i in self.income
            if (symbol is None or i.symbol == symbol) and (kind is None or i.kind == kind)
            and (start is None or i.time >= start) and (end is None or i.time <= end)
        ]  # fmt: skip
        first = (page - 1) * limit
        return rows[first : first + limit]
