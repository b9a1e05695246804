"""Translate ccxt exceptions into the engine's error tree, at this one boundary."""

from __future__ import annotations

from typing import Any

import ccxt

from pms.errors import ExchangeRejected, ExchangeUnavailable, PmsError, RateLimited


class UnknownOrderState(ExchangeUnavailable):
    """The exchange may or may not have acted (5xx, timeout); resolve before acting again."""


class OrderUnknownToExchange(ExchangeRejected):
    """The exchange has no such order (-2011 / -2013)."""


def translate(exc: Exception, *, action: str, retry_after: str | None = None) -> PmsError:
    message = str(exc)
    details: dict[str, Any] = {"action": action, "exchange": message[:300]}
    if isinstance(exc, ccxt.DDoSProtection | ccxt.RateLimitExceeded):
        if retry_after:
            details["retryAfterSec"] = retry_after
        return RateLimited(f"exchange rate limit hit during {action}; retry later", details)
    if isinstance(exc, ccxt.OrderNotFound):
        return OrderUnknownToExchange(f"exchange does not know this order ({action})", details)
    if isinstance(exc, ccxt.InsufficientFunds):
        return ExchangeRejected(
            f"exchange rejected {action}: master account margin is insufficient", details
        )
    if isinstance(exc, ccxt.OrderNotFillable | ccxt.OrderImmediatelyFillable):
        return ExchangeRejected(
            f"exchange rejected {action}: post-only order would take liquidity", details
        )
    if isinstance(exc, ccxt.AuthenticationError | ccxt.PermissionDenied | ccxt.AccountSuspended):
        return ExchangeRejected(f"exchange refused our credentials during {action}", details)
    if isinstance(exc, ccxt.RequestTimeout | ccxt.ExchangeNotAvailable | ccxt.OnMaintenance):
        return UnknownOrderState(
            f"exchange did not answer {action} clearly; state unknown", details
        )
    if isinstance(exc, ccxt.OperationFailed):
        # NetworkError and Binance's -1000/-1006/-1007 "unknown" family: it may have happened.
        return UnknownOrderState(f"exchange could not confirm {action}; state unknown", details)
    if isinstance(exc, ccxt.BadRequest | ccxt.InvalidOrder | ccxt.BadSymbol | ccxt.ExchangeError):
        return ExchangeRejected(f"exchange rejected {action}: {message[:200]}", details)
    # Anything else: we cannot tell whether it happened, so callers must resolve first.
    return UnknownOrderState(f"unexpected exchange error during {action}; state unknown", details)
