"""What the engine needs from an exchange: a small protocol and the values it trades in.

The real adapter (ccxt ``binanceusdm``) and the simulator both sit behind :class:`Exchange`.
Values are exact (Decimal from the exchange's own strings, never from ccxt's floats) and use
canonical symbols; exchange ids stay inside the adapter.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from decimal import Decimal
from typing import Protocol

from pms.domain.enums import OrderType, Side, TimeInForce
from pms.domain.instrument import Instrument


@dataclass(frozen=True, slots=True)
class OrderRequest:
    symbol: str
    side: Side
    type: OrderType
    qty: Decimal
    client_order_id: str
    price: Decimal | None = None
    time_in_force: TimeInForce | None = None
    reduce_only: bool = False
    # The latest time (epoch ms, this host's clock) the placement may be signed: later, it is
    # refused as not placed rather than sent (a redelivery may be deciding to send it again).
    sign_by_ms: int | None = None


@dataclass(frozen=True, slots=True)
class ExchangeOrder:
    symbol: str
    exchange_order_id: str
    client_order_id: str
    status: str  # Binance status: NEW, PARTIALLY_FILLED, FILLED, CANCELED, EXPIRED, ...
    side: Side
    type: str
    qty: Decimal
    price: Decimal
    executed_qty: Decimal
    avg_price: Decimal
    reduce_only: bool
    update_time_ms: int


@dataclass(frozen=True, slots=True)
class TradeReport:
    """One fill as the exchange reports it (REST userTrades, user stream, order-sync)."""

    symbol: str
    trade_id: str
    exchange_order_id: str
    client_order_id: str | None
    side: Side
    qty: Decimal
    price: Decimal
    fee: Decimal
    fee_asset: str
    is_maker: bool
    traded_at: datetime
    # Set when the reporting path knows the order's cumulative state (user stream): its
    # status and filled quantity once this trade is counted (``X`` and ``z``).
    order_status: str | None = None
    order_filled: Decimal | None = None
    # The order's quantity as of this trade (the user stream's ``q``: an amendment is in it
    # even when its AMENDMENT event is lost or behind this fill in a take).
    order_qty: Decimal | None = None


@dataclass(frozen=True, slots=True)
class ExchangePosition:
    symbol: str
    qty: Decimal  # signed
    entry_price: Decimal
    mark_price: Decimal


@dataclass(frozen=True, slots=True)
class FundingRate:
    """One funding of a symbol (``GET /fapi/v1/fundingRate``): the rate and the mark price it
    was settled at (None where the exchange gives none: older records)."""

    symbol: str
    funding_time_ms: int
    rate: Decimal
    mark_price: Decimal | None


@dataclass(frozen=True, slots=True)
class FundingIncome:
    """What the master account was paid (+) or charged (-) at one funding of one symbol
    (``GET /fapi/v1/income``, ``incomeType=FUNDING_FEE``)."""

    symbol: str
    amount: Decimal
    time_ms: int
    tran_id: str


class Exchange(Protocol):
    def load_instruments(self) -> dict[str, Instrument]: ...

    def create_order(self, request: OrderRequest) -> ExchangeOrder: ...

    def fetch_order(self, symbol: str, client_order_id: str) -> ExchangeOrder | None: ...

    def cancel_order(self, symbol: str, client_order_id: str) -> ExchangeOrder | None: ...

    def amend_order(
        self, symbol: str, client_order_id: str, side: Side, qty: Decimal, price: Decimal
    ) -> ExchangeOrder: ...

    def fetch_open_orders(self, symbol: str | None = None) -> list[ExchangeOrder]: ...

    def fetch_order_trades(self, symbol: str, exchange_order_id: str) -> list[TradeReport]: ...

    def fetch_order_trades_between(
        self, symbol: str, exchange_order_id: str, start_ms: int, end_ms: int
    ) -> list[TradeReport]: ...

    def fetch_trades_since(self, symbol: str, since_ms: int) -> list[TradeReport]: ...

    def set_leverage(self, symbol: str, leverage: int) -> None: ...

    def fetch_mark_price(self, symbol: str) -> Decimal: ...

    def fetch_positions(self) -> list[ExchangePosition]: ...

    def fetch_funding_rates(self, symbol: str, start_ms: int, end_ms: int) -> list[FundingRate]: ...

    def fetch_funding_income(
        self, symbol: str, start_ms: int, end_ms: int
    ) -> list[FundingIncome]: ...

    def close(self) -> None: ...
