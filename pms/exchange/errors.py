"""Translate ccxt exceptions into the engine's error tree, at this one boundary."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from typing import Any

import ccxt
import structlog

from pms.errors import ExchangeRejected, ExchangeUnavailable, PmsError, RateLimited

log = structlog.get_logger(__name__)


class UnknownOrderState(ExchangeUnavailable):
    """The exchange may or may not have acted (5xx, timeout); resolve before acting again."""


class OrderUnknownToExchange(ExchangeRejected):
    """The exchange has no such order (-2011 / -2013)."""


# How long to stay away after a 429 / 418 whose answer says no usable Retry-After (a 418 is
# an IP ban).
DEFAULT_PAUSE_S = {429: 10.0, 418: 120.0}
MAX_PAUSE_S = 24 * 3600.0


def rate_limit_pause_s(
    exc: Exception, retry_after: str | None, status: int | None = None
) -> float | None:
    """How long no call may go to the exchange after ``exc`` (None: it is no rate limit): the
    answer's Retry-After, else a default by HTTP status (when known; ccxt maps Binance's
    -1003 to DDoSProtection whatever the status), else by ccxt's class."""
    if not isinstance(exc, ccxt.DDoSProtection | ccxt.RateLimitExceeded):
        return None
    try:
        seconds = float(retry_after or "")  # float-ok: a wait in seconds, not money
    except ValueError:
        seconds = -1.0
    if seconds >= 0:  # NaN compares false: the default
        return min(seconds, MAX_PAUSE_S)
    if status in DEFAULT_PAUSE_S:
        return DEFAULT_PAUSE_S[status]
    return DEFAULT_PAUSE_S[429 if isinstance(exc, ccxt.RateLimitExceeded) else 418]


class RateLimitPause:
    """After a 429/418 no call goes to the exchange until its pause is over: calling on is
    what turns a 429 into a ban and extends a ban (per IP: every process's orders and
    liquidations stop with it). One per adapter, shared by its threads."""

    def __init__(self, monotonic: Callable[[], float] = time.monotonic) -> None:
        self._monotonic = monotonic
        self._until = 0.0  # monotonic: no call before this
        self._lock = threading.Lock()

    def check(self, action: str, **details: Any) -> None:
        """Refuse, without sending, while a pause lasts (``details`` join the error's)."""
        wait = self._until - self._monotonic()
        if wait > 0:
            raise RateLimited(
                f"{action}: not sent, the exchange asked us to stay away {wait:.0f} s more",
                {"action": action, "retryAfterSec": round(wait, 3), **details},
            )

    def after(
        self, exc: Exception, retry_after: str | None, status: int | None = None
    ) -> float | None:
        """Start the pause ``exc`` calls for (see :func:`rate_limit_pause_s`); its length."""
        pause = rate_limit_pause_s(exc, retry_after, status)
        if pause is not None:
            with self._lock:
                self._until = max(self._until, self._monotonic() + pause)
            log.error("exchange rate limit: no call until the pause is over", pause_s=pause)
        return pause


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
