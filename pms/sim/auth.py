"""Request parsing and authentication exactly as Binance does it.

The signature is ``hex(HMAC_SHA256(secret, totalParams))`` where ``totalParams`` is the raw
query string concatenated with the raw body, minus the ``signature`` pair. We MAC the bytes
as sent (ccxt sends ``batchOrders=[{"symbol":"BTCUSDT",...}]`` without percent-encoding),
never a re-encoding of parsed params. Sample signed body::

    symbol=BTCUSDT&side=BUY&type=MARKET&quantity=0.010&timestamp=1767225600000
    &recvWindow=10000&signature=3c1f...e9
"""

from __future__ import annotations

import hashlib
import hmac
import re
from urllib.parse import unquote, unquote_plus

from pms.domain.numbers import ascii_digits
from pms.sim import errors
from pms.sim.validation import Params

RAW_KEYS = {
    "batchOrders",
    "orderIdList",
    "orderidlist",
    "origClientOrderIdList",
    "origclientorderidlist",
}
MAX_RECV_WINDOW = 60000
_API_KEY = re.compile(r"^[A-Za-z0-9_\-]{1,128}$")


def parse_params(raw: str) -> Params:
    """``a=1&b=x+y`` → ``{"a": "1", "b": "x y"}``; JSON-carrying keys keep ``+`` literally."""
    out: Params = {}
    if not raw:
        return out
    for part in raw.split("&"):
        if not part:
            continue
        key, _, value = part.partition("=")
        key = unquote_plus(key)
        decoded = unquote(value) if key in RAW_KEYS else unquote_plus(value)
        out.setdefault(key, decoded)
    return out


def merge_params(query: str, body: str) -> Params:
    """The request's params: Binance reads a parameter sent in both the query string and the
    body from the query string."""
    params = parse_params(query)
    for key, value in parse_params(body).items():
        params.setdefault(key, value)
    return params


def split_signature(raw: str) -> tuple[str, str | None]:
    """Remove the ``signature=`` pair; return (the signed text, the signature or None)."""
    if not raw:
        return "", None
    kept: list[str] = []
    signature: str | None = None
    for part in raw.split("&"):
        if part.startswith("signature=") and signature is None:
            signature = part[len("signature=") :]
        else:
            kept.append(part)
    return "&".join(kept), signature


def check_api_key(header: str | None, expected: str) -> None:
    if not header:
        raise errors.SimError(-2015, "Invalid API-key, IP, or permissions for action.", 401)
    if not _API_KEY.match(header):
        raise errors.bad_api_key_format()
    if not hmac.compare_digest(header.encode(), expected.encode()):
        raise errors.bad_api_key()


def verify(query: str, body: str, secret: str, server_ms: int) -> Params:
    """Check signature and timestamp of a signed request; return the merged params."""
    q_text, q_sig = split_signature(query)
    b_text, b_sig = split_signature(body)
    signature = q_sig if q_sig is not None else b_sig
    if signature is None:
        raise errors.mandatory("signature")
    payload = q_text + b_text
    expected = hmac.new(secret.encode(), payload.encode(), hashlib.sha256).hexdigest()
    if not hmac.compare_digest(expected, signature.lower()):
        raise errors.bad_signature()
    params = merge_params(q_text, b_text)
    check_timestamp(params, server_ms)
    return params


def check_timestamp(params: Params, server_ms: int) -> None:
    ts_text = params.get("timestamp")
    if not ts_text:
        raise errors.mandatory("timestamp")
    # str.isdigit() alone also accepts '²', which int() refuses (a 500 before).
    if not ascii_digits(ts_text) or len(ts_text) > 16:
        raise errors.SimError(-1100, "Illegal characters found in parameter 'timestamp'.")
    recv_text = params.get("recvWindow", "5000")
    if not ascii_digits(recv_text) or len(recv_text) > 12:
        raise errors.SimError(-1100, "Illegal characters found in parameter 'recvWindow'.")
    recv = int(recv_text)
    if recv > MAX_RECV_WINDOW:
        raise errors.SimError(-1131, "recvWindow must be less than 60000")
    ts = int(ts_text)
    if not (ts < server_ms + 1000 and server_ms - ts <= recv):
        raise errors.timestamp_outside()
