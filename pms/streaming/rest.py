"""The REST calls the streamer needs (depth snapshots, listen keys) on async ccxt.

Raw Binance payloads through ccxt's implicit endpoints, never ccxt's float-parsed structures.
ccxt exceptions are translated here, at the boundary: :class:`ListenKeyMissing` (-1125),
``RateLimited`` (429/418) and ``ExchangeUnavailable`` (anything else: network, 5xx).

A 429 or 418 closes the door for its ``Retry-After`` (or a default): until then every call is
refused here, without reaching the exchange. Calling on is what turns a 429 into an IP ban and
extends one, and the ban is per IP: the workers' orders and liquidations share it.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from decimal import Decimal
from typing import Any

import ccxt.async_support as ccxt_async

from pms.errors import ExchangeUnavailable, RateLimited
from pms.exchange.ccxt_factory import make_binanceusdm
from pms.exchange.errors import RateLimitPause
from pms.streaming.book import Level


class ListenKeyMissing(ExchangeUnavailable):
    """-1125 "This listenKey does not exist.": POST a new one."""


@dataclass(frozen=True, slots=True)
class DepthSnapshot:
    last_update_id: int
    bids: tuple[Level, ...]
    asks: tuple[Level, ...]
    event_ms: int


def parse_depth_snapshot(raw: dict[str, Any]) -> DepthSnapshot:
    """``GET /fapi/v1/depth``: ``{"lastUpdateId":1000040,"E":1767225600000,"T":1767225600000,
    "bids":[["59999.9","0.412"]],"asks":[["60000.1","1.204"]]}``"""
    return DepthSnapshot(
        last_update_id=int(raw["lastUpdateId"]),
        bids=tuple((Decimal(p), Decimal(q)) for p, q in raw["bids"]),
        asks=tuple((Decimal(p), Decimal(q)) for p, q in raw["asks"]),
        event_ms=int(raw.get("E") or 0),
    )


class ExchangeRest:
    """Async ccxt ``binanceusdm``; one per streamer process."""

    def __init__(
        self,
        base_url: str | None,
        api_key: str,
        secret: str,
        *,
        monotonic: Callable[[], float] = time.monotonic,
    ) -> None:
        self._ex: Any = make_binanceusdm(base_url, api_key, secret, asynchronous=True)
        self._pause = RateLimitPause(monotonic)
        # ccxt's throttle charges a 1000-level depth its weight (20) in 50 ms units: a second
        # of queueing that would also hold a listen-key POST behind it. The streamer makes a
        # handful of REST calls (one snapshot per symbol per resync), well inside the limits.
        self._ex.enableRateLimit = False

    async def depth(self, symbol: str, limit: int = 1000) -> DepthSnapshot:
        raw = await self._call("fapiPublicGetDepth", {"symbol": symbol, "limit": limit})
        return parse_depth_snapshot(raw)

    async def create_listen_key(self) -> str:
        """POST returns the account's active key (creating one if needed) and extends it."""
        raw = await self._call("fapiPrivatePostListenKey", {})
        return str(raw["listenKey"])

    async def keepalive_listen_key(self, key: str) -> None:
        await self._call("fapiPrivatePutListenKey", {"listenKey": key})

    async def fee_burn(self) -> bool:
        """Whether the BNB fee discount is on (``GET /fapi/v1/feeBurn``)."""
        raw = await self._call("fapiPrivateGetFeeBurn", {})
        value = raw.get("feeBurn") if isinstance(raw, dict) else None
        if not isinstance(value, bool):
            raise ExchangeUnavailable(f"feeBurn: unexpected answer {str(raw)[:200]}")
        return value

    async def set_fee_burn(self, on: bool) -> None:
        await self._call("fapiPrivatePostFeeBurn", {"feeBurn": "true" if on else "false"})

    async def close(self) -> None:
        await self._ex.close()

    async def _call(self, method: str, params: dict[str, Any]) -> Any:
        self._pause.check(method)
        try:
            return await getattr(self._ex, method)(params)
        except ccxt_async.BaseError as exc:
            text = str(exc)
            if isinstance(exc, ccxt_async.DDoSProtection | ccxt_async.RateLimitExceeded):
                headers = {k.lower(): v for k, v in (self._ex.last_response_headers or {}).items()}
                pause = self._pause.after(exc, headers.get("retry-after"))
                raise RateLimited(
                    f"{method}: rate limited by the exchange: {text[:200]}",
                    {"retryAfterSec": pause},
                ) from exc
            if "-1125" in text:
                raise ListenKeyMissing(f"listen key does not exist: {text[:200]}") from exc
            raise ExchangeUnavailable(
                f"{method} failed: {type(exc).__name__}: {text[:200]}"
            ) from exc
