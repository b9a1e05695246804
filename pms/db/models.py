"""The schema. The database enforces what must never be false (SPEC §4):

- a requestId is processed once (``requests.request_id`` primary key);
- a clientOrderId names one order; an exchange trade is booked once per symbol;
- a wallet balance never goes below zero, except the house account's, which absorbs losses;
- one open position per sub-account and symbol; every row points at a real sub-account.
"""

from __future__ import annotations

from datetime import datetime
from decimal import Decimal
from typing import Any

from sqlalchemy import (
    BigInteger,
    Boolean,
    CheckConstraint,
    DateTime,
    ForeignKey,
    Identity,
    Index,
    Integer,
    String,
    Text,
    UniqueConstraint,
    func,
    text,
)
from sqlalchemy.dialects.postgresql import JSONB
from sqlalchemy.orm import Mapped, mapped_column

from pms.db.base import Base

ACCOUNT_STATUSES = ("ACTIVE", "RESTRICTED", "LIQUIDATING", "FROZEN", "CLOSED")
TIERS = ("NORMAL", "WARNING", "RESTRICTED", "ADL1", "ADL2", "LIQUIDATION")
LEDGER_KINDS = (
    "DEPOSIT",
    "WITHDRAWAL",
    "REALIZED_PNL",
    "FEE",
    "FUNDING",
    "LIQUIDATION_FEE",
    "INSURANCE",
    "TRANSFER",
)
ORDER_STATUSES = (
    "PENDING_NEW",
    "NEW",
    "PARTIALLY_FILLED",
    "FILLED",
    "CANCELED",
    "REJECTED",
    "EXPIRED",
)


def _in(column: str, values: tuple[str, ...]) -> str:
    quoted = ", ".join(f"'{v}'" for v in values)
    return f"{column} IN ({quoted})"


def _created() -> Mapped[datetime]:
    return mapped_column(DateTime(timezone=True), server_default=func.now())


class SubAccount(Base):
    __tablename__ = "sub_accounts"

    id: Mapped[int] = mapped_column(BigInteger, Identity(), primary_key=True)
    name: Mapped[str] = mapped_column(String(100))
    owner_user_id: Mapped[str] = mapped_column(String(64), index=True)
    status: Mapped[str] = mapped_column(String(16), server_default="ACTIVE")
    tier: Mapped[str] = mapped_column(String(16), server_default="NORMAL")
    is_house: Mapped[bool] = mapped_column(Boolean, server_default=text("false"))
    wallet_balance: Mapped[Decimal] = mapped_column(server_default="0")
    # The create_sub_account request that created it: its retry finds it (migration 0005).
    request_id: Mapped[str | None] = mapped_column(String(64))
    created_at: Mapped[datetime] = _created()
    updated_at: Mapped[datetime] = _created()

    __table_args__ = (
        CheckConstraint(_in("status", ACCOUNT_STATUSES), name="status_valid"),
        CheckConstraint(_in("tier", TIERS), name="tier_valid"),
        CheckConstraint("length(name) > 0", name="name_not_empty"),
        Index(
            "uq_sub_accounts_one_house", "is_house", unique=True, postgresql_where=text("is_house")
        ),
        Index(
            "uq_sub_accounts_request",
            "request_id",
            unique=True,
            postgresql_where=text("request_id IS NOT NULL"),
        ),
    )


class RiskRules(Base):
    __tablename__ = "risk_rules"

    sub_account_id: Mapped[int] = mapped_column(
        ForeignKey("sub_accounts.id", ondelete="CASCADE"), primary_key=True
    )
    max_leverage: Mapped[int] = mapped_column(Integer, server_default="20")
    max_notional_per_symbol: Mapped[Decimal | None] = mapped_column()
    max_exposure_multiple: Mapped[Decimal | None] = mapped_column(server_default="10")
    liquidation_mode: Mapped[str] = mapped_column(String(16), server_default="close")
    warning_ratio: Mapped[Decimal] = mapped_column(server_default="0.70")
    restricted_ratio: Mapped[Decimal] = mapped_column(server_default="0.80")
    adl1_ratio: Mapped[Decimal] = mapped_column(server_default="0.90")
    adl2_ratio: Mapped[Decimal] = mapped_column(server_default="0.95")
    liquidation_ratio: Mapped[Decimal] = mapped_column(server_default="1.00")
    price_band_bps: Mapped[int] = mapped_column(Integer, server_default="500")
    max_orders_per_minute: Mapped[int] = mapped_column(Integer, server_default="600")
    updated_at: Mapped[datetime] = _created()

    __table_args__ = (
        CheckConstraint("max_leverage BETWEEN 1 AND 125", name="max_leverage_range"),
        CheckConstraint(_in("liquidation_mode", ("close", "takeover")), name="mode_valid"),
        CheckConstraint(
            "0 < warning_ratio AND warning_ratio <= restricted_ratio"
            " AND restricted_ratio <= adl1_ratio AND adl1_ratio <= adl2_ratio"
            " AND adl2_ratio <= liquidation_ratio",
            name="tiers_ordered",
        ),
    )


class LedgerEntry(Base):
    """One change of one wallet balance; ``balance_after`` is the running balance."""

    __tablename__ = "ledger_entries"

    id: Mapped[int] = mapped_column(BigInteger, Identity(), primary_key=True)
    sub_account_id: Mapped[int] = mapped_column(ForeignKey("sub_accounts.id"), index=True)
    kind: Mapped[str] = mapped_column(String(24))
    amount: Mapped[Decimal] = mapped_column()
    balance_after: Mapped[Decimal] = mapped_column()
    asset: Mapped[str] = mapped_column(String(10), server_default="USDT")
    # What caused it (a request, a fill, a liquidation...). Unique per account and kind, so
    # the same cause can never be posted twice.
    ref_type: Mapped[str | None] = mapped_column(String(24))
    ref_id: Mapped[str | None] = mapped_column(String(96))
    note: Mapped[str | None] = mapped_column(Text)
    created_at: Mapped[datetime] = _created()

    __table_args__ = (
        CheckConstraint(_in("kind", LEDGER_KINDS), name="kind_valid"),
        CheckConstraint("amount <> 0", name="amount_not_zero"),
        UniqueConstraint("sub_account_id", "kind", "ref_type", "ref_id", name="uq_ledger_ref"),
    )


class Position(Base):
    """One net position (one-way mode). Closed rows are kept; at most one open per symbol."""

    __tablename__ = "positions"

    id: Mapped[int] = mapped_column(BigInteger, Identity(), primary_key=True)
    sub_account_id: Mapped[int] = mapped_column(ForeignKey("sub_accounts.id"), index=True)
    symbol: Mapped[str] = mapped_column(String(40))
    qty: Mapped[Decimal] = mapped_column(server_default="0")  # signed: + long, - short
    entry_price: Mapped[Decimal] = mapped_column(server_default="0")
    leverage: Mapped[int] = mapped_column(Integer, server_default="1")
    realized_pnl: Mapped[Decimal] = mapped_column(server_default="0")
    fees_paid: Mapped[Decimal] = mapped_column(server_default="0")
    opened_at: Mapped[datetime] = _created()
    updated_at: Mapped[datetime] = _created()
    closed_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))

    __table_args__ = (
        Index(
            "uq_positions_open",
            "sub_account_id",
            "symbol",
            unique=True,
            postgresql_where=text("closed_at IS NULL"),
        ),
        Index("ix_positions_open_symbol", "symbol", postgresql_where=text("closed_at IS NULL")),
        CheckConstraint("entry_price >= 0", name="entry_non_negative"),
        CheckConstraint("leverage BETWEEN 1 AND 125", name="leverage_range"),
    )


class Order(Base):
    __tablename__ = "orders"

    id: Mapped[int] = mapped_column(BigInteger, Identity(), primary_key=True)
    client_order_id: Mapped[str] = mapped_column(String(36), unique=True)
    exchange_order_id: Mapped[str | None] = mapped_column(String(40))
    # Indexed with created_at (the order-rate window): ix_orders_sub_account_created.
    sub_account_id: Mapped[int] = mapped_column(ForeignKey("sub_accounts.id"))
    symbol: Mapped[str] = mapped_column(String(40))
    side: Mapped[str] = mapped_column(String(4))
    type: Mapped[str] = mapped_column(String(16))
    qty: Mapped[Decimal] = mapped_column()
    price: Mapped[Decimal | None] = mapped_column()
    reduce_only: Mapped[bool] = mapped_column(Boolean, server_default=text("false"))
    post_only: Mapped[bool] = mapped_column(Boolean, server_default=text("false"))
    time_in_force: Mapped[str | None] = mapped_column(String(4))
    leverage: Mapped[int] = mapped_column(Integer, server_default="1")
    status: Mapped[str] = mapped_column(String(20), server_default="PENDING_NEW")
    filled_qty: Mapped[Decimal] = mapped_column(server_default="0")
    avg_price: Mapped[Decimal | None] = mapped_column()
    origin: Mapped[str] = mapped_column(String(64), server_default="manual")
    request_id: Mapped[str | None] = mapped_column(String(64), index=True)
    reject_reason: Mapped[str | None] = mapped_column(Text)
    created_at: Mapped[datetime] = _created()
    updated_at: Mapped[datetime] = _created()

    __table_args__ = (
        CheckConstraint("side IN ('BUY', 'SELL')", name="side_valid"),
        CheckConstraint(_in("status", ORDER_STATUSES), name="status_valid"),
        CheckConstraint("qty > 0", name="qty_positive"),
        CheckConstraint("filled_qty >= 0 AND filled_qty <= qty", name="filled_within_qty"),
        UniqueConstraint("symbol", "exchange_order_id", name="uq_orders_exchange_id"),
        Index("ix_orders_sub_account_created", "sub_account_id", "created_at"),
        Index(
            "ix_orders_open",
            "sub_account_id",
            postgresql_where=text("status IN ('PENDING_NEW', 'NEW', 'PARTIALLY_FILLED')"),
        ),
    )


class Fill(Base):
    __tablename__ = "fills"

    id: Mapped[int] = mapped_column(BigInteger, Identity(), primary_key=True)
    sub_account_id: Mapped[int] = mapped_column(ForeignKey("sub_accounts.id"), index=True)
    order_id: Mapped[int | None] = mapped_column(ForeignKey("orders.id"), index=True)
    symbol: Mapped[str] = mapped_column(String(40))
    exchange_trade_id: Mapped[str] = mapped_column(String(64))
    side: Mapped[str] = mapped_column(String(4))
    qty: Mapped[Decimal] = mapped_column()
    price: Mapped[Decimal] = mapped_column()
    fee: Mapped[Decimal] = mapped_column(server_default="0")
    fee_asset: Mapped[str] = mapped_column(String(10), server_default="USDT")
    realized_pnl: Mapped[Decimal] = mapped_column(server_default="0")
    is_maker: Mapped[bool] = mapped_column(Boolean, server_default=text("false"))
    source: Mapped[str] = mapped_column(String(16))  # rest | stream | sync | takeover
    traded_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))
    booked_at: Mapped[datetime] = _created()

    __table_args__ = (
        UniqueConstraint("symbol", "exchange_trade_id", name="uq_fills_trade"),
        CheckConstraint("qty > 0", name="qty_positive"),
        CheckConstraint("price > 0", name="price_positive"),
        # Holdings at a past funding time: the fills traded after it (pms.funding).
        Index("ix_fills_symbol_traded", "symbol", "traded_at"),
    )


class FundingSettlement(Base):
    """One symbol's funding at one funding time, shared out to the sub-accounts once."""

    __tablename__ = "funding_settlements"

    symbol: Mapped[str] = mapped_column(String(40), primary_key=True)
    funding_time: Mapped[datetime] = mapped_column(DateTime(timezone=True), primary_key=True)
    rate: Mapped[Decimal] = mapped_column()
    mark_price: Mapped[Decimal] = mapped_column()
    # What the master account was paid (+) or charged (-): the exchange's income record.
    exchange_amount: Mapped[Decimal] = mapped_column()
    # The sum of the sub-accounts' FUNDING entries (house included, residual excluded).
    allocated: Mapped[Decimal] = mapped_column()
    house_residual: Mapped[Decimal] = mapped_column()
    accounts: Mapped[int] = mapped_column(Integer)
    settled_at: Mapped[datetime] = _created()

    __table_args__ = (
        CheckConstraint("mark_price > 0", name="mark_positive"),
        CheckConstraint("accounts >= 0", name="accounts_counted"),
    )


class Request(Base):
    """Idempotency by requestId: the first arrival claims the row, its result is replayed."""

    __tablename__ = "requests"

    request_id: Mapped[str] = mapped_column(String(64), primary_key=True)
    actor: Mapped[str] = mapped_column(String(64))
    user_id: Mapped[str | None] = mapped_column(String(64))
    payload_hash: Mapped[str] = mapped_column(String(64))
    status: Mapped[str] = mapped_column(String(12), server_default="PENDING")
    result: Mapped[dict[str, Any] | None] = mapped_column(JSONB)
    created_at: Mapped[datetime] = _created()
    completed_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))

    __table_args__ = (CheckConstraint("status IN ('PENDING', 'DONE')", name="status_valid"),)


class SymbolLeverage(Base):
    """The leverage a sub-account chose for a symbol (``set_leverage``)."""

    __tablename__ = "symbol_leverage"

    sub_account_id: Mapped[int] = mapped_column(ForeignKey("sub_accounts.id"), primary_key=True)
    symbol: Mapped[str] = mapped_column(String(40), primary_key=True)
    leverage: Mapped[int] = mapped_column(Integer)
    updated_at: Mapped[datetime] = _created()

    __table_args__ = (CheckConstraint("leverage BETWEEN 1 AND 125", name="leverage_range"),)


class AlgoRun(Base):
    __tablename__ = "algo_runs"

    id: Mapped[int] = mapped_column(BigInteger, Identity(), primary_key=True)
    type: Mapped[str] = mapped_column(String(16))
    sub_account_id: Mapped[int] = mapped_column(ForeignKey("sub_accounts.id"), index=True)
    status: Mapped[str] = mapped_column(String(16), server_default="RUNNING")
    params: Mapped[dict[str, Any]] = mapped_column(JSONB)
    state: Mapped[dict[str, Any]] = mapped_column(JSONB, server_default=text("'{}'::jsonb"))
    request_id: Mapped[str | None] = mapped_column(String(64))
    created_at: Mapped[datetime] = _created()
    updated_at: Mapped[datetime] = _created()
    finished_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))

    __table_args__ = (
        CheckConstraint(
            _in("type", ("chase", "scalper", "twap", "trail", "basket")), name="type_valid"
        ),
        CheckConstraint(
            _in("status", ("RUNNING", "PAUSED", "COMPLETED", "CANCELED", "FAILED")),
            name="status_valid",
        ),
    )


class LiquidationEvent(Base):
    """A risk action (margin call, restriction, ADL cut, liquidation, insurance), recorded once."""

    __tablename__ = "liquidation_events"

    id: Mapped[int] = mapped_column(BigInteger, Identity(), primary_key=True)
    sub_account_id: Mapped[int] = mapped_column(ForeignKey("sub_accounts.id"), index=True)
    idempotency_key: Mapped[str] = mapped_column(String(128), unique=True)
    tier: Mapped[str] = mapped_column(String(16))
    action: Mapped[str] = mapped_column(String(24))
    status: Mapped[str] = mapped_column(String(12), server_default="PENDING")
    margin_ratio: Mapped[Decimal | None] = mapped_column()
    equity: Mapped[Decimal | None] = mapped_column()
    details: Mapped[dict[str, Any]] = mapped_column(JSONB, server_default=text("'{}'::jsonb"))
    created_at: Mapped[datetime] = _created()
    completed_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))

    __table_args__ = (
        CheckConstraint(_in("tier", TIERS), name="tier_valid"),
        CheckConstraint("status IN ('PENDING', 'DONE', 'FAILED')", name="status_valid"),
    )
