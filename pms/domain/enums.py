"""Sides, statuses, tiers and the other closed vocabularies of the domain."""

from __future__ import annotations

import enum


class Side(enum.StrEnum):
    BUY = "BUY"
    SELL = "SELL"

    @property
    def sign(self) -> int:
        return 1 if self is Side.BUY else -1

    @property
    def opposite(self) -> Side:
        return Side.SELL if self is Side.BUY else Side.BUY


class AccountStatus(enum.StrEnum):
    ACTIVE = "ACTIVE"
    RESTRICTED = "RESTRICTED"
    LIQUIDATING = "LIQUIDATING"
    FROZEN = "FROZEN"
    CLOSED = "CLOSED"


class LiquidationMode(enum.StrEnum):
    CLOSE = "close"
    TAKEOVER = "takeover"


class Tier(enum.StrEnum):
    """Risk tiers by margin ratio, in increasing severity (SPEC §5)."""

    NORMAL = "NORMAL"
    WARNING = "WARNING"
    RESTRICTED = "RESTRICTED"
    ADL1 = "ADL1"
    ADL2 = "ADL2"
    LIQUIDATION = "LIQUIDATION"

    @property
    def severity(self) -> int:
        return _TIER_ORDER.index(self)


_TIER_ORDER = list(Tier)


class LedgerKind(enum.StrEnum):
    DEPOSIT = "DEPOSIT"
    WITHDRAWAL = "WITHDRAWAL"
    REALIZED_PNL = "REALIZED_PNL"
    FEE = "FEE"
    FUNDING = "FUNDING"
    LIQUIDATION_FEE = "LIQUIDATION_FEE"
    INSURANCE = "INSURANCE"
    TRANSFER = "TRANSFER"


class OrderType(enum.StrEnum):
    MARKET = "MARKET"
    LIMIT = "LIMIT"


class TimeInForce(enum.StrEnum):
    GTC = "GTC"
    IOC = "IOC"
    FOK = "FOK"
    GTX = "GTX"


class OrderStatus(enum.StrEnum):
    """Our order lifecycle. PENDING_NEW: intent persisted, exchange not yet confirmed."""

    PENDING_NEW = "PENDING_NEW"
    NEW = "NEW"
    PARTIALLY_FILLED = "PARTIALLY_FILLED"
    FILLED = "FILLED"
    CANCELED = "CANCELED"
    REJECTED = "REJECTED"
    EXPIRED = "EXPIRED"

    @property
    def is_open(self) -> bool:
        return self in _OPEN_STATUSES


_OPEN_STATUSES = frozenset({OrderStatus.PENDING_NEW, OrderStatus.NEW, OrderStatus.PARTIALLY_FILLED})


class AlgoType(enum.StrEnum):
    CHASE = "chase"
    SCALPER = "scalper"
    TWAP = "twap"
    TRAIL = "trail"
    BASKET = "basket"


class AlgoStatus(enum.StrEnum):
    RUNNING = "RUNNING"
    PAUSED = "PAUSED"
    COMPLETED = "COMPLETED"
    CANCELED = "CANCELED"
    FAILED = "FAILED"
