"""Canonical symbols (ccxt unified ``BTC/USDT:USDT``) and exchange ids (``BTCUSDT``).

Exchange ids never leave the adapters; everything else speaks canonical symbols.
"""

from __future__ import annotations

import re

_CANONICAL = re.compile(r"^([A-Z0-9]{1,20})/([A-Z]{2,10}):([A-Z]{2,10})$")
QUOTES = ("USDT", "USDC", "BUSD")


def is_canonical(symbol: str) -> bool:
    return bool(_CANONICAL.match(symbol))


def to_exchange_id(symbol: str) -> str:
    """``BTC/USDT:USDT`` → ``BTCUSDT``."""
    match = _CANONICAL.match(symbol)
    if not match:
        raise ValueError(f"not a canonical symbol: {symbol!r} (expected like BTC/USDT:USDT)")
    base, quote, _settle = match.groups()
    return f"{base}{quote}"


def from_exchange_id(exchange_id: str) -> str:
    """``BTCUSDT`` → ``BTC/USDT:USDT`` for linear USDⓈ-M perpetuals."""
    symbol = perpetual_of(exchange_id)
    if symbol is None:
        raise ValueError(f"cannot map exchange id {exchange_id!r} to a canonical symbol")
    return symbol


def perpetual_of(exchange_id: str) -> str | None:
    """The canonical symbol of a linear perpetual's exchange id; None for any other contract
    the account may hold (a quarterly ``BTCUSDT_260626``, traded by hand outside the engine),
    which the engine neither trades nor books."""
    upper = exchange_id.upper()
    for quote in QUOTES:
        base = upper[: -len(quote)]
        if upper.endswith(quote) and base and base.isalnum() and base.isascii():
            return f"{base}/{quote}:{quote}"
    return None
