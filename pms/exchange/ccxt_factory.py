"""Build a configured ccxt ``binanceusdm`` (sync or async) for Binance or the simulator.

Against a non-Binance ``base_url`` (the simulator on loopback) ccxt needs, besides the URL
overrides, ``fetchCurrencies: False`` (no sapi call on load), and the linear exception map
merged into the global one (ccxt picks the linear map by URL prefix, so on loopback -2019
would be a bare ExchangeError and -5022 an InvalidOrder). See the protocol reference §1.1, §3.
"""

from __future__ import annotations

from typing import Any

import ccxt
import ccxt.async_support as ccxt_async

URL_PATHS = {
    "fapiPublic": "/fapi/v1",
    "fapiPublicV2": "/fapi/v2",
    "fapiPublicV3": "/fapi/v3",
    "fapiPrivate": "/fapi/v1",
    "fapiPrivateV2": "/fapi/v2",
    "fapiPrivateV3": "/fapi/v3",
    "fapiData": "/futures/data",
    "dapiPublic": "/dapi/v1",
    "dapiPrivate": "/dapi/v1",
    "dapiPrivateV2": "/dapi/v2",
    "dapiData": "/futures/data",
    "eapiPublic": "/eapi/v1",
    "eapiPrivate": "/eapi/v1",
    "papi": "/papi/v1",
    "papiV2": "/papi/v2",
    "sapi": "/sapi/v1",
    "sapiV2": "/sapi/v2",
    "sapiV3": "/sapi/v3",
    "sapiV4": "/sapi/v4",
    "public": "/api/v3",
    "private": "/api/v3",
    "v1": "/api/v1",
}


RECV_WINDOW_MS = 5000


def make_binanceusdm(
    base_url: str | None,
    api_key: str,
    secret: str,
    *,
    asynchronous: bool = False,
    timeout_ms: int = 10000,
) -> Any:
    """A ``ccxt.binanceusdm`` (or ``ccxt.async_support.binanceusdm``) ready to trade.

    ``base_url`` like ``http://127.0.0.1:8765`` points every API family at that host;
    ``None`` keeps Binance's own URLs (production).
    """
    options = {
        # How late a signed request may reach Binance and still be processed (ccxt: 10 s).
        # It bounds how long an order whose placement went unanswered may still appear
        # (pms.execution.orders.PENDING_GRACE); Binance recommends 5 s or less.
        "recvWindow": RECV_WINDOW_MS,
        "fetchCurrencies": False,
        "adjustForTimeDifference": True,
        "fetchOpenOrders": {"warnWithoutSymbol": False},
        "warnOnFetchOpenOrdersWithoutSymbol": False,
    }
    config = {
        "apiKey": api_key,
        "secret": secret,
        "enableRateLimit": True,
        "timeout": timeout_ms,
        "options": options,
    }
    cls = ccxt_async.binanceusdm if asynchronous else ccxt.binanceusdm
    ex = cls(config)
    ex.options["maxRetriesOnFailure"] = 0
    if base_url is not None:
        root = base_url.rstrip("/")
        api = ex.urls["api"]
        for key, path in URL_PATHS.items():
            api[key] = root + path
        for key in list(api):
            if key not in URL_PATHS:
                api[key] = root + "/unsupported/" + key
        _merge_linear_exceptions(ex)
    return ex


def _merge_linear_exceptions(ex: Any) -> None:
    linear = ex.exceptions.get("linear", {})
    for kind in ("exact", "broad"):
        if kind in linear:
            ex.exceptions[kind].update(linear[kind])
