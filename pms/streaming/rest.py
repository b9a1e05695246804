"""The REST calls the streamer needs (depth snapshots, listen keys) on async ccxt.

Raw Binance payloads through ccxt's implicit endpoints, never ccxt's float-parsed structures.
ccxt exceptions are translated here, at the boundary: :class:`ListenKeyMissing` (-1125) and
``ExchangeUnavailable`` (anything else: network, 5xx, rate limits).
"""

from __future__ import annotations

from dataclasses import dataclass
from decimal import Decimal
from typing import Any

import ccxt.async_support as ccxt_async

from pms.errors import ExchangeUnavailable
from pms.exchange.ccxt_factory import make_binanceusdm
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

    def __init__(self, base_url: str | None, api_key: str, secret: str) -> None:
        self._ex: Any = make_binanceusdm(base_url, api_key, secret, asynchronous=True)
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
        try:
            return await getattr(self._ex, method)(params)
        except ccxt_async.BaseError as exc:
            text = str(exc)
            if "-1125" in text:
                raise ListenKeyMissing(f"listen key does not exist: {text[:200]}") from exc
            raise ExchangeUnavailable(
                f"{method} failed: {type(exc).__name__}: {text[:200]}"
            ) from exc
