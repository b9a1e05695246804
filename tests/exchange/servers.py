"""Real-socket servers for transport tests: a faulting TCP relay and a canned HTTP(S) server.

* :class:`Relay` forwards ``127.0.0.1:relay.port`` to a target port (the simulator), counts the
  TCP connections it accepted, and can misbehave: close every client connection while idle
  (FIN, or RST with ``rst=True``), or swallow the next request(s) without forwarding or
  answering (a server that accepted and hangs).
* :class:`CannedServer` answers each request with what a test queued, raw bytes included
  (chunked, gzip, ``Connection: close``, a bad status line ...), optionally over TLS.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import socket
import ssl
import struct
import threading
from collections import deque
from collections.abc import Callable
from pathlib import Path
from types import TracebackType
from typing import Self

Answer = Callable[[bytes, socket.socket], bool]  # (request bytes, client socket) -> keep open?


def _shut(sock: socket.socket) -> None:
    """Close with a FIN, waking any thread blocked on the socket (a bare close would not)."""
    with contextlib.suppress(OSError):
        sock.shutdown(socket.SHUT_RDWR)
    with contextlib.suppress(OSError):
        sock.close()


def _reset(sock: socket.socket) -> None:
    """Close with a RST (linger 0); only when no other thread is blocked on it."""
    with contextlib.suppress(OSError):
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        sock.close()


class _Pair:
    def __init__(self, client: socket.socket, upstream: socket.socket) -> None:
        self.client = client
        self.upstream = upstream
        self.rst = False
        self.hung = False
        self.closed = threading.Event()


class Relay:
    def __init__(self, target_port: int) -> None:
        self.target_port = target_port
        self.accepted = 0
        self.swallow = 0  # requests to swallow (their connection then hangs)
        self._listener = socket.create_server(("127.0.0.1", 0))
        self.port = int(self._listener.getsockname()[1])
        self._lock = threading.Lock()
        self._pairs: list[_Pair] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._accept, daemon=True)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def __enter__(self) -> Self:
        self._thread.start()
        return self

    def __exit__(
        self, et: type[BaseException] | None, e: BaseException | None, tb: TracebackType | None
    ) -> None:
        self._stop.set()
        _shut(self._listener)
        self.drop()
        self._thread.join(5)

    def drop(self, *, rst: bool = False) -> None:
        """Close every client connection (FIN, or RST), as a server does with idle ones."""
        with self._lock:
            pairs, self._pairs = self._pairs, []
        for pair in pairs:
            pair.rst = rst
            with contextlib.suppress(OSError):
                pair.client.shutdown(socket.SHUT_RD)  # wakes the pump, which closes
        for pair in pairs:
            pair.closed.wait(5)

    def _accept(self) -> None:
        while not self._stop.is_set():
            try:
                client, _ = self._listener.accept()
            except OSError:
                return
            try:
                upstream = socket.create_connection(("127.0.0.1", self.target_port), 5)
            except OSError:
                _shut(client)
                continue
            upstream.settimeout(None)
            pair = _Pair(client, upstream)
            with self._lock:
                self.accepted += 1
                self._pairs.append(pair)
            threading.Thread(target=self._pump_up, args=(pair,), daemon=True).start()
            threading.Thread(target=self._pump_down, args=(pair,), daemon=True).start()

    def _pump_up(self, pair: _Pair) -> None:
        try:
            while data := pair.client.recv(65536):
                with self._lock:
                    if not pair.hung and self.swallow > 0:
                        self.swallow -= 1
                        pair.hung = True
                if not pair.hung:
                    pair.upstream.sendall(data)
                # else: read and dropped, never answered: the server "hangs"
        except OSError:
            pass
        finally:
            if pair.rst:
                _reset(pair.client)
            else:
                _shut(pair.client)
            _shut(pair.upstream)
            pair.closed.set()

    @staticmethod
    def _pump_down(pair: _Pair) -> None:
        try:
            while data := pair.upstream.recv(65536):
                pair.client.sendall(data)
        except OSError:
            pass
        finally:  # the server closed: pass the FIN on
            with contextlib.suppress(OSError):
                pair.client.shutdown(socket.SHUT_WR)


def http_answer(
    status: int = 200,
    body: bytes = b"{}",
    headers: dict[str, str] | None = None,
    *,
    reason: str = "X",
) -> Answer:
    """A plain ``Content-Length`` answer."""
    head = f"HTTP/1.1 {status} {reason}\r\n"
    merged = {"Content-Type": "application/json", **(headers or {})}
    merged.setdefault("Content-Length", str(len(body)))
    head += "".join(f"{k}: {v}\r\n" for k, v in merged.items())
    raw = head.encode() + b"\r\n" + body

    def answer(request: bytes, sock: socket.socket) -> bool:
        sock.sendall(raw)
        return "close" not in merged.get("Connection", "")

    return answer


def raw_answer(raw: bytes, *, close: bool = False) -> Answer:
    def answer(request: bytes, sock: socket.socket) -> bool:
        sock.sendall(raw)
        return not close

    return answer


class CannedServer:
    """Answers requests in order from :meth:`queue` (the last answer repeats when empty);
    ``routes`` answers requests whose target starts with a key, whatever the queue holds."""

    def __init__(self, tls: ssl.SSLContext | None = None) -> None:
        self.accepted = 0
        self.requests: list[bytes] = []
        self.routes: dict[bytes, Answer] = {}
        self._answers: deque[Answer] = deque()
        self._last: Answer = http_answer()
        self._tls = tls
        self._listener = socket.create_server(("127.0.0.1", 0))
        self.port = int(self._listener.getsockname()[1])
        self._lock = threading.Lock()
        self._open: list[socket.socket] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._accept, daemon=True)

    @property
    def url(self) -> str:
        return f"{'https' if self._tls else 'http'}://127.0.0.1:{self.port}"

    def queue(self, *answers: Answer) -> None:
        with self._lock:
            self._answers.extend(answers)

    def clear(self) -> None:
        """Forget queued answers and recorded requests."""
        with self._lock:
            self._answers.clear()
            self.requests.clear()

    def __enter__(self) -> Self:
        self._thread.start()
        return self

    def __exit__(
        self, et: type[BaseException] | None, e: BaseException | None, tb: TracebackType | None
    ) -> None:
        self._stop.set()
        _shut(self._listener)
        with self._lock:
            for sock in self._open:
                _shut(sock)
        self._thread.join(5)

    def _accept(self) -> None:
        while not self._stop.is_set():
            try:
                sock, _ = self._listener.accept()
            except OSError:
                return
            with self._lock:
                self.accepted += 1
                self._open.append(sock)
            threading.Thread(target=self._serve, args=(sock,), daemon=True).start()

    def _serve(self, sock: socket.socket) -> None:
        try:
            if self._tls is not None:
                sock = self._tls.wrap_socket(sock, server_side=True)
                with self._lock:
                    self._open.append(sock)
            buf = b""
            while True:
                while b"\r\n\r\n" not in buf:
                    data = sock.recv(65536)
                    if not data:
                        return
                    buf += data
                head, _, rest = buf.partition(b"\r\n\r\n")
                length = 0
                for line in head.split(b"\r\n")[1:]:
                    name, _, value = line.partition(b":")
                    if name.strip().lower() == b"content-length":
                        length = int(value)
                while len(rest) < length:
                    rest += sock.recv(65536)
                request, buf = head + b"\r\n\r\n" + rest[:length], rest[length:]
                target = request.split(b" ", 2)[1]
                with self._lock:
                    self.requests.append(request)
                    routed = [a for prefix, a in self.routes.items() if target.startswith(prefix)]
                    if routed:
                        answer = routed[0]
                    else:
                        answer = self._answers.popleft() if self._answers else self._last
                        self._last = answer
                if not answer(request, sock):
                    return
        except (OSError, ValueError):
            return
        finally:
            _shut(sock)


def make_tls(tmp: Path) -> tuple[ssl.SSLContext, ssl.SSLContext]:
    """(server context with a fresh cert for 127.0.0.1, client context trusting only it)."""
    import ipaddress

    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "pms-test")])
    now = dt.datetime.now(dt.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(days=1))
        .not_valid_after(now + dt.timedelta(days=1))
        .add_extension(
            x509.SubjectAlternativeName([x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]),
            critical=False,
        )
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .sign(key, hashes.SHA256())
    )
    cert_path, key_path = tmp / "cert.pem", tmp / "key.pem"
    cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_path.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    server = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    server.load_cert_chain(cert_path, key_path)
    client = ssl.create_default_context(cafile=str(cert_path))
    return server, client
