"""The one exception tree of the engine.

::

    PmsError                      code INTERNAL
    ├── TerminalError             the same input will fail again: answer the client
    │   ├── ValidationError       VALIDATION_ERROR
    │   ├── UnknownSymbol         UNKNOWN_SYMBOL
    │   ├── InsufficientMargin    INSUFFICIENT_MARGIN
    │   ├── LeverageTooHigh       LEVERAGE_TOO_HIGH
    │   ├── ExposureLimit         EXPOSURE_LIMIT
    │   ├── AccountFrozen         ACCOUNT_FROZEN
    │   ├── AccountRestricted     ACCOUNT_RESTRICTED
    │   ├── NotFound              NOT_FOUND
    │   ├── Forbidden             FORBIDDEN
    │   ├── DuplicateRequest      DUPLICATE_REQUEST
    │   ├── ExchangeRejected      EXCHANGE_REJECTED
    │   └── ConfigError           INTERNAL (start-up only)
    └── RetryableError            the same input may succeed later
        ├── ExchangeUnavailable   EXCHANGE_UNAVAILABLE
        └── RateLimited           RATE_LIMITED

Third-party exceptions (ccxt, redis, websockets, SQLAlchemy) are translated into these at the
adapter boundary with ``raise Ours(...) from exc``.
"""

from __future__ import annotations

from typing import Any


class PmsError(Exception):
    code = "INTERNAL"

    def __init__(self, message: str, details: dict[str, Any] | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.details = details or {}

    def to_error(self) -> dict[str, Any]:
        return {"code": self.code, "message": self.message, "details": self.details}


class TerminalError(PmsError):
    pass


class RetryableError(PmsError):
    pass


class ValidationError(TerminalError):
    code = "VALIDATION_ERROR"


class UnknownSymbol(TerminalError):
    code = "UNKNOWN_SYMBOL"


class InsufficientMargin(TerminalError):
    code = "INSUFFICIENT_MARGIN"


class LeverageTooHigh(TerminalError):
    code = "LEVERAGE_TOO_HIGH"


class ExposureLimit(TerminalError):
    code = "EXPOSURE_LIMIT"


class AccountFrozen(TerminalError):
    code = "ACCOUNT_FROZEN"


class AccountRestricted(TerminalError):
    code = "ACCOUNT_RESTRICTED"


class NotFound(TerminalError):
    code = "NOT_FOUND"


class Forbidden(TerminalError):
    code = "FORBIDDEN"


class DuplicateRequest(TerminalError):
    code = "DUPLICATE_REQUEST"


class ExchangeRejected(TerminalError):
    code = "EXCHANGE_REJECTED"


class ConfigError(TerminalError):
    code = "INTERNAL"


class ExchangeUnavailable(RetryableError):
    code = "EXCHANGE_UNAVAILABLE"


class RateLimited(RetryableError):
    code = "RATE_LIMITED"


ERROR_CODES: frozenset[str] = frozenset(
    cls.code
    for cls in (
        PmsError,
        ValidationError,
        UnknownSymbol,
        InsufficientMargin,
        LeverageTooHigh,
        ExposureLimit,
        AccountFrozen,
        AccountRestricted,
        NotFound,
        Forbidden,
        DuplicateRequest,
        ExchangeRejected,
        ExchangeUnavailable,
        RateLimited,
    )
)
