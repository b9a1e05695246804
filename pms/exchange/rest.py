"""Signed Binance REST calls: ccxt signs and maps errors, :mod:`.transport` carries the bytes.

ccxt ``binanceusdm`` stays the protocol authority: :meth:`SignedRest.call` resolves an implicit
endpoint name (``fapiPrivatePostOrder``) to ccxt's own (path, api, method) entry, signs as
``ex.sign`` does (:mod:`.signer`: timestamp from the ``load_time_difference`` offset,
recvWindow, HMAC-SHA256; byte for byte, ccxt's own ``sign`` for anything unusual) and feeds the
answer to ccxt's ``handle_errors`` and ``handle_http_status_code``, exactly as ccxt's ``fetch``
does, so the same ccxt exception classes come out for the same status and body. What it skips
is ccxt's HTTP stack (requests, urllib3, http.client): ~80 % of a call's CPU.

Transport failures become the exceptions ccxt raises for them:

=================================================  ====================
transport                                          ccxt
=================================================  ====================
connect timed out / no answer in time              ``RequestTimeout``
connect refused, certificate refused, send failed  ``NetworkError``
reset or closed before a complete answer           ``NetworkError``
=================================================  ====================

``SignedRest.fetch`` has ccxt's ``fetch(url, method, headers, body)`` signature and is installed
on the ccxt instance, so ccxt's own helpers (``load_time_difference``) use this transport too.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass
from typing import Any

import ccxt
import orjson

from pms.exchange.signer import Signer
from pms.exchange.transport import KeepAliveTransport, TransportError

_NO_HEADERS: dict[str, str] = {}


@dataclass(frozen=True, slots=True)
class Endpoint:
    path: str
    api: Any  # ccxt's api spec: ['fapiPrivate']
    method: str


def endpoint(ex: Any, name: str) -> Endpoint:
    """ccxt's declaration of an implicit endpoint (``fapiPrivatePostOrder``)."""
    for klass in type(ex).__mro__:
        entry = vars(klass).get(name)
        if entry is not None:
            return Endpoint(entry.path, entry.api, entry.method)
    raise AttributeError(f"ccxt {ex.id} has no endpoint {name}")


class SignedRest:
    """ccxt-equivalent ``fetch`` and implicit-endpoint calls over a :class:`KeepAliveTransport`.

    Thread-safe: ccxt's ``sign`` only reads the instance; the transport keeps a connection per
    thread; the last response headers are kept per thread (:meth:`last_headers`).
    """

    def __init__(self, ex: Any, transport: KeepAliveTransport) -> None:
        self._ex = ex
        self._transport = transport
        self._signer = Signer(ex)
        self._endpoints: dict[str, Endpoint] = {}
        self._local = threading.local()
        ex.fetch = self.fetch

    def call(self, name: str, params: dict[str, Any]) -> Any:
        """What ``getattr(ex, name)(params)`` returns or raises, minus ccxt's throttle."""
        ep = self._endpoints.get(name)
        if ep is None:
            ep = self._endpoints[name] = endpoint(self._ex, name)
        request = self._signer.sign(ep.path, ep.api, ep.method, params)
        return self.fetch(request["url"], request["method"], request["headers"], request["body"])

    def last_headers(self) -> dict[str, str]:
        """This thread's last response headers (lower-case names); empty after no answer."""
        headers: dict[str, str] = getattr(self._local, "headers", _NO_HEADERS)
        return headers

    def last_status(self) -> int | None:
        """This thread's last HTTP status; None after no answer."""
        status: int | None = getattr(self._local, "status", None)
        return status

    def fetch(
        self,
        url: str,
        method: str = "GET",
        headers: dict[str, str] | None = None,
        body: str | None = None,
    ) -> Any:
        ex = self._ex
        try:
            response = self._transport.request(method, url, headers, body)
        except TransportError as exc:
            self._local.headers = _NO_HEADERS
            self._local.status = None
            details = f"{ex.id} {method} {url}"
            if exc.timeout:
                raise ccxt.RequestTimeout(details) from exc
            raise ccxt.NetworkError(details) from exc
        self._local.headers = response.headers
        self._local.status = response.status
        status = response.status
        raw = response.body.strip()
        parsed: Any = None
        if raw[:1] in (b"{", b"["):
            try:
                parsed = orjson.loads(raw)
            except orjson.JSONDecodeError:
                parsed = None
        if 400 <= status < 600:  # requests' raise_for_status, then ccxt's HTTPError branch
            text = raw.decode("utf-8", "replace")
            reason = response.reason
            skip = ex.handle_errors(
                status, reason, url, method, response.headers, text, parsed, headers, body
            )
            if not skip:
                ex.handle_http_status_code(status, reason, url, method, text)
            raise ccxt.ExchangeError(f"{ex.id} {method} {url}")
        if _may_carry_error(parsed):
            ex.handle_errors(
                status,
                response.reason,
                url,
                method,
                response.headers,
                raw.decode("utf-8", "replace"),
                parsed,
                headers,
                body,
            )
        if parsed is not None:
            return parsed
        return raw.decode("utf-8", "replace")


def _may_carry_error(parsed: Any) -> bool:
    """Whether ccxt's binance ``handle_errors`` could act on a 2xx body (else it is a no-op).

    It looks at ``success``/``msg``/``code`` of an object and the ``code`` of a one-item list
    (and at the body text only for status >= 400)."""
    if isinstance(parsed, dict):
        return "code" in parsed or "msg" in parsed or "success" in parsed
    return isinstance(parsed, list) and len(parsed) == 1
