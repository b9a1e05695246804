"""A lean HTTP/1.1 client: one persistent connection per thread per host, nothing else.

Built for the exchange adapter's hot path (a signed REST call per order step). It does what a
REST call to Binance or ``pms sim`` needs and no more: one request on a connection at a time,
``Content-Length`` or chunked bodies, gzip/deflate, TLS with certificate checks. No redirects,
cookies, proxies, cross-thread pooling or ``email.parser``: with them a call cost 5-7x the CPU.

Failure semantics are the point (an order call must never be sent twice blindly):

* :class:`NotSent` - provably nothing complete reached the server: the connection could not be
  opened, or the request could not be written in full (a server cannot act on a request whose
  last bytes it never received). ``timeout`` tells a connect timeout from a refusal.
* :class:`Unanswered` - the request was written; no complete answer came (timeout, reset,
  close, garbage). The server may have acted on it. ``timeout`` marks a timeout.

Stale keep-alive connections are the one place where a retry is safe and needed: a connection
idle longer than ``idle_s``, or one the server has closed (readable while idle: EOF, a reset or
a TLS close alert), is replaced *before* anything is written on it; a write that fails on a
reused connection is repeated once on a fresh one (nothing complete was sent). A server that
closes the connection after reading a complete request is not retried: it may have acted.
"""

from __future__ import annotations

import select
import socket
import ssl
import threading
import time
import zlib
from collections.abc import Mapping
from dataclasses import dataclass

from pms.domain.numbers import ascii_digits

# Replace a connection idle for longer than this before writing on it. Below the idle timeouts
# servers and balancers commonly use (nginx and aiohttp 75 s, ALB 60 s, Go 90 s), so a request
# does not cross the server's close in flight; servers closing sooner (Apache's 5 s) send a FIN
# that the readability check sees first. Binance does not document its own.
IDLE_S = 15.0
MAX_HEAD = 64 * 1024
MAX_BODY = 64 * 1024 * 1024
RECV = 64 * 1024


class TransportError(Exception):
    """Base class; ``timeout`` is true when the failure was a timeout."""

    def __init__(self, message: str, *, timeout: bool = False) -> None:
        super().__init__(message)
        self.timeout = timeout


class NotSent(TransportError):
    """Nothing complete reached the server (connect or write failed)."""


class TlsFailed(NotSent):
    """The server's certificate was refused: nothing was sent, and retrying will not help."""


class Unanswered(TransportError):
    """The request was written but no complete response came back: the outcome is unknown."""


class _ProtocolError(Exception):
    """The peer's bytes are not an HTTP/1.1 response we can read."""


class _Closed(ConnectionError):
    """The server closed the connection (EOF)."""


@dataclass(frozen=True, slots=True)
class Response:
    status: int
    reason: str
    headers: dict[str, str]  # lower-case names; repeated headers joined with ", "
    body: bytes  # decoded (gzip/deflate undone)


@dataclass(frozen=True, slots=True)
class Origin:
    tls: bool
    host: str
    port: int
    host_header: str

    @classmethod
    def parse(cls, netloc: str, scheme: str) -> Origin:
        if scheme not in ("http", "https"):
            raise ValueError(f"unsupported URL scheme {scheme!r}")
        tls = scheme == "https"
        if netloc.startswith("["):  # [::1]:8765
            host, _, rest = netloc[1:].partition("]")
            port = rest[1:] if rest.startswith(":") else ""
        else:
            host, _, port = netloc.partition(":")
        return cls(tls, host, int(port or (443 if tls else 80)), netloc)


class _Connection:
    """One socket and its read buffer. Used by a single thread at a time."""

    __slots__ = (
        "_buf",
        "_chunk",
        "_first_read",
        "_poll",
        "_timeout_s",
        "_view",
        "idle_s",
        "last_used",
        "origin",
        "reused",
        "sock",
        "thread",
    )

    def __init__(
        self, origin: Origin, sock: socket.socket, idle_s: float, timeout_s: float
    ) -> None:
        self.origin = origin
        self.sock = sock
        self.idle_s = idle_s
        self.thread = threading.current_thread()
        self.last_used = time.monotonic()
        self.reused = False
        self._buf = bytearray()
        self._chunk = bytearray(RECV)
        self._view = memoryview(self._chunk)
        # The socket's own timeout; lowered only while a long response is read.
        self._timeout_s = timeout_s
        self._first_read = False
        sock.settimeout(timeout_s)
        self._poll = select.poll()
        self._poll.register(sock.fileno(), select.POLLIN | select.POLLPRI)

    def usable(self, now: float) -> bool:
        """Safe to write a request on: fresh enough and nothing arrived while idle.

        Anything readable on an idle HTTP/1.1 connection means the server is done with it:
        EOF, a reset, a TLS close alert, or an unsolicited 408."""
        if now - self.last_used > self.idle_s or self._buf:
            return False
        if isinstance(self.sock, ssl.SSLSocket) and self.sock.pending():
            return False
        return not self._poll.poll(0)

    def send(self, data: bytes, timeout_s: float) -> None:
        if self._timeout_s != timeout_s:  # reading a long response lowered it
            self._timeout_s = timeout_s
            self.sock.settimeout(timeout_s)
        self.sock.sendall(data)
        self._first_read = True

    def close(self) -> None:
        self.sock.close()

    # -- reading --------------------------------------------------------------------------

    def _more(self, deadline: float) -> None:
        """One read into the buffer, within what is left of the response deadline.

        The first read of a response keeps the socket's timeout (the whole budget: no syscall
        to change it); later reads of a long response get only the remainder."""
        if self._first_read:
            self._first_read = False
        else:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise TimeoutError("response deadline passed")
            self._timeout_s = remaining
            self.sock.settimeout(remaining)
        n = self.sock.recv_into(self._view)
        if not n:
            raise _Closed("connection closed by the server before a full response")
        self._buf += self._view[:n]

    def _find(self, sep: bytes, start: int, deadline: float, limit: int) -> int:
        while True:
            at = self._buf.find(sep, start)
            if at >= 0:
                return at
            if len(self._buf) - start > limit:
                raise _ProtocolError("response head or chunk line too long")
            self._more(deadline)

    def _fill(self, end: int, deadline: float) -> None:
        if end - len(self._buf) > MAX_BODY:
            raise _ProtocolError("response body too large")
        while len(self._buf) < end:
            self._more(deadline)

    def read_response(self, method: str, deadline: float) -> tuple[Response, bool]:
        """Read one response; also say whether the connection may carry another request."""
        buf = self._buf
        while True:
            end = self._find(b"\r\n\r\n", 0, deadline, MAX_HEAD)
            lines = buf[:end].decode("latin-1").split("\r\n")
            version, _, rest = lines[0].partition(" ")
            code, _, reason = rest.partition(" ")
            if not version.startswith("HTTP/1.") or len(code) != 3 or not ascii_digits(code):
                raise _ProtocolError(f"bad status line {lines[0][:80]!r}")
            status = int(code)
            pos = end + 4
            if 100 <= status < 200 and status != 101:  # interim answer (100 Continue): skip
                del buf[:pos]
                continue
            break
        headers: dict[str, str] = {}
        for line in lines[1:]:
            name, colon, value = line.partition(":")
            if not colon:
                raise _ProtocolError("bad header line")
            key = name.lower()  # no space before the colon (RFC 9112 §5.1)
            if key in headers:
                headers[key] += ", " + value.strip()
            else:
                headers[key] = value.strip()
        keep = version == "HTTP/1.1"
        conn_header = headers.get("connection", "").lower()
        if "close" in conn_header:
            keep = False
        elif "keep-alive" in conn_header:
            keep = True
        if method == "HEAD" or status in (204, 304):
            body = b""
            del buf[:pos]
        elif "chunked" in headers.get("transfer-encoding", "").lower():
            body = self._read_chunked(pos, deadline)
        elif "content-length" in headers:
            try:
                length = int(headers["content-length"])
            except ValueError:
                raise _ProtocolError("bad Content-Length") from None
            self._fill(pos + length, deadline)
            body = bytes(buf[pos : pos + length])
            del buf[: pos + length]
        else:  # delimited by the close
            keep = False
            try:
                while True:
                    self._more(deadline)
                    if len(buf) - pos > MAX_BODY:
                        raise _ProtocolError("response body too large")
            except _Closed:
                pass
            body = bytes(buf[pos:])
            buf.clear()
        if buf:  # bytes beyond the response: the stream is out of step
            keep = False
        encoding = headers.get("content-encoding")
        if encoding and body:
            body = _decode(body, encoding)
        if keep and "keep-alive" in headers:
            self.idle_s = min(self.idle_s, _server_idle(headers["keep-alive"], self.idle_s))
        return Response(status, reason, headers, body), keep

    def _read_chunked(self, pos: int, deadline: float) -> bytes:
        buf = self._buf
        parts: list[bytes] = []
        total = 0
        while True:
            eol = self._find(b"\r\n", pos, deadline, 1024)
            try:
                size = int(buf[pos:eol].split(b";", 1)[0], 16)
            except ValueError:
                raise _ProtocolError("bad chunk size") from None
            pos = eol + 2
            if size == 0:
                while True:  # trailers, up to the empty line
                    eol = self._find(b"\r\n", pos, deadline, MAX_HEAD)
                    empty = eol == pos
                    pos = eol + 2
                    if empty:
                        del buf[:pos]
                        return b"".join(parts)
            total += size
            if total > MAX_BODY:
                raise _ProtocolError("response body too large")
            self._fill(pos + size + 2, deadline)
            if buf[pos + size : pos + size + 2] != b"\r\n":
                raise _ProtocolError("bad chunk end")
            parts.append(bytes(buf[pos : pos + size]))
            pos += size + 2


def _decode(body: bytes, encoding: str) -> bytes:
    try:
        for coding in reversed([c.strip().lower() for c in encoding.split(",")]):
            if coding in ("gzip", "x-gzip"):
                body = zlib.decompress(body, 16 + zlib.MAX_WBITS)
            elif coding == "deflate":
                try:
                    body = zlib.decompress(body)
                except zlib.error:
                    body = zlib.decompress(body, -zlib.MAX_WBITS)
            elif coding not in ("identity", ""):
                raise _ProtocolError(f"unsupported Content-Encoding {coding!r}")
    except zlib.error as exc:
        raise _ProtocolError(f"bad {encoding} body: {exc}") from None
    return body


def _server_idle(keep_alive: str, default: float) -> float:
    """``Keep-Alive: timeout=5, max=100`` → a bound safely under the server's 5 s."""
    for part in keep_alive.split(","):
        name, _, value = part.strip().partition("=")
        if name.lower() == "timeout":
            try:
                return max(float(value) - 1.0, 0.0)  # float-ok: seconds, not money
            except ValueError:
                return default
    return default


_tls_lock = threading.Lock()
_tls: ssl.SSLContext | None = None


def default_tls_context() -> ssl.SSLContext:
    """Verifying client context (certifi's CA bundle when installed, like ``requests``)."""
    global _tls
    with _tls_lock:
        if _tls is None:
            try:
                import certifi

                ctx = ssl.create_default_context(cafile=certifi.where())
            except ImportError:  # pragma: no cover - certifi ships with requests
                ctx = ssl.create_default_context()
            ctx.set_alpn_protocols(["http/1.1"])
            _tls = ctx
        return _tls


class KeepAliveTransport:
    """``request(method, url, headers, body) -> Response`` over per-thread persistent sockets.

    ``timeout_s`` bounds the connect (and TLS handshake) and, separately, the wait for the
    whole response after the request is written. ``connects`` counts connections opened.
    """

    def __init__(
        self,
        timeout_s: float,
        *,
        idle_s: float = IDLE_S,
        headers: Mapping[str, str] | None = None,
        tls_context: ssl.SSLContext | None = None,
    ) -> None:
        self.timeout_s = timeout_s
        self.idle_s = idle_s
        self.connects = 0
        self._tls = tls_context
        self._fixed = "".join(f"{k}: {_checked(v)}\r\n" for k, v in (headers or {}).items())
        self._origins: dict[str, Origin] = {}
        self._local = threading.local()
        self._lock = threading.Lock()
        self._all: list[_Connection] = []

    def request(
        self,
        method: str,
        url: str,
        headers: Mapping[str, str] | None = None,
        body: str | bytes | None = None,
    ) -> Response:
        scheme, _, rest = url.partition("://")
        netloc, _, path = rest.partition("/")
        key = url[: len(scheme) + 3 + len(netloc)]
        origin = self._origins.get(key) or self._origin(key, netloc, scheme)
        payload = body.encode() if isinstance(body, str) else body or b""
        head = f"{method} /{_target(path)} HTTP/1.1\r\nHost: {origin.host_header}\r\n{self._fixed}"
        if headers:
            head += "".join(f"{k}: {_checked(v)}\r\n" for k, v in headers.items())
        if payload or method in ("POST", "PUT", "PATCH"):
            head += f"Content-Length: {len(payload)}\r\n"
        data = (head + "\r\n").encode("latin-1") + payload

        conns: dict[str, _Connection] | None = getattr(self._local, "conns", None)
        if conns is None:
            conns = self._local.conns = {}
        conn = conns.get(key)
        if conn is not None and not conn.usable(time.monotonic()):
            self._drop(conns, key, conn)
            conn = None
        if conn is None:
            conn = self._connect(conns, key, origin)
        try:
            conn.send(data, self.timeout_s)
        except OSError as exc:
            self._drop(conns, key, conn)
            if not conn.reused:
                raise NotSent(f"could not send to {origin.host_header}: {exc!r}") from exc
            # The server had dropped this idle connection: the request did not get through in
            # full, so it cannot have been acted on. Once more on a new connection.
            conn = self._connect(conns, key, origin)
            try:
                conn.send(data, self.timeout_s)
            except OSError as exc2:
                self._drop(conns, key, conn)
                raise NotSent(f"could not send to {origin.host_header}: {exc2!r}") from exc2
        try:
            response, keep = conn.read_response(method, time.monotonic() + self.timeout_s)
        except TimeoutError as exc:
            self._drop(conns, key, conn)
            raise Unanswered(
                f"no answer from {origin.host_header} in {self.timeout_s}s", timeout=True
            ) from exc
        except (OSError, _ProtocolError) as exc:
            self._drop(conns, key, conn)
            raise Unanswered(f"no complete answer from {origin.host_header}: {exc!r}") from exc
        if keep:
            conn.reused = True
            conn.last_used = time.monotonic()
        else:
            self._drop(conns, key, conn)
        return response

    def _origin(self, key: str, netloc: str, scheme: str) -> Origin:
        origin = Origin.parse(netloc, scheme)
        self._origins[key] = origin
        return origin

    def _connect(self, conns: dict[str, _Connection], key: str, origin: Origin) -> _Connection:
        try:
            sock = socket.create_connection((origin.host, origin.port), self.timeout_s)
        except TimeoutError as exc:
            raise NotSent(f"connect to {origin.host_header} timed out", timeout=True) from exc
        except OSError as exc:
            raise NotSent(f"could not connect to {origin.host_header}: {exc!r}") from exc
        try:
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            if origin.tls:
                ctx = self._tls or default_tls_context()
                sock = ctx.wrap_socket(sock, server_hostname=origin.host)
        except TimeoutError as exc:
            sock.close()
            raise NotSent(
                f"TLS handshake with {origin.host_header} timed out", timeout=True
            ) from exc
        except ssl.SSLCertVerificationError as exc:
            sock.close()
            raise TlsFailed(f"TLS certificate of {origin.host_header} refused: {exc!r}") from exc
        except OSError as exc:
            sock.close()
            raise NotSent(f"could not connect to {origin.host_header}: {exc!r}") from exc
        conn = _Connection(origin, sock, self.idle_s, self.timeout_s)
        conns[key] = conn
        with self._lock:
            self.connects += 1
            # Forget connections of threads that have ended (worker pools come and go).
            dead = [c for c in self._all if not c.thread.is_alive()]
            for c in dead:
                c.close()
            self._all = [c for c in self._all if c.thread.is_alive()]
            self._all.append(conn)
        return conn

    def _drop(self, conns: dict[str, _Connection], key: str, conn: _Connection) -> None:
        conn.close()
        if conns.get(key) is conn:
            del conns[key]
        with self._lock:
            if conn in self._all:
                self._all.remove(conn)

    def close(self) -> None:
        """Close every connection (any thread's); later requests open new ones."""
        with self._lock:
            for conn in self._all:
                conn.close()
            self._all.clear()
        self._local = threading.local()


def _checked(value: str) -> str:
    if "\r" in value or "\n" in value:
        raise ValueError(f"refusing to send {value[:40]!r}: a line break in a header")
    return value


def _target(path: str) -> str:
    if "\r" in path or "\n" in path or " " in path:
        raise ValueError(f"refusing to send {path[:40]!r}: not a percent-encoded path")
    return path
