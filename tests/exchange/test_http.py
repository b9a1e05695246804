"""The HTTP/1.1 client itself, against a canned server on a real socket (and over TLS)."""

from __future__ import annotations

import gzip
import socket
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import ccxt
import pytest

from pms.exchange.ccxt_factory import make_binanceusdm
from pms.exchange.rest import SignedRest
from pms.exchange.transport import KeepAliveTransport, NotSent, TlsFailed, Unanswered
from tests.exchange.servers import CannedServer, http_answer, make_tls, raw_answer


@pytest.fixture
def server() -> Iterator[CannedServer]:
    with CannedServer() as s:
        yield s


@pytest.fixture
def http() -> Iterator[KeepAliveTransport]:
    t = KeepAliveTransport(1.0)
    yield t
    t.close()


def test_request_bytes_on_the_wire(server: CannedServer, http: KeepAliveTransport) -> None:
    http.request(
        "POST",
        f"{server.url}/fapi/v1/order",
        {"X-MBX-APIKEY": "k", "Content-Type": "application/x-www-form-urlencoded"},
        "a=1&b=2",
    )
    http.request("GET", f"{server.url}/fapi/v1/openOrders?symbol=BTCUSDT&signature=ab")
    post, get = server.requests
    assert (
        post
        == (
            f"POST /fapi/v1/order HTTP/1.1\r\nHost: 127.0.0.1:{server.port}\r\n"
            "X-MBX-APIKEY: k\r\nContent-Type: application/x-www-form-urlencoded\r\n"
            "Content-Length: 7\r\n\r\na=1&b=2"
        ).encode()
    )
    assert (
        get
        == (
            f"GET /fapi/v1/openOrders?symbol=BTCUSDT&signature=ab HTTP/1.1\r\n"
            f"Host: 127.0.0.1:{server.port}\r\n\r\n"
        ).encode()
    )
    assert server.accepted == 1


def test_chunked_gzip_and_repeated_headers(server: CannedServer, http: KeepAliveTransport) -> None:
    packed = gzip.compress(b'{"a": "1"}')
    chunks = b"".join(b"%x\r\n%s\r\n" % (len(p), p) for p in (packed[:5], packed[5:]))
    server.queue(
        raw_answer(
            b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\nContent-Encoding: gzip\r\n"
            b"X-A: 1\r\nX-A: 2\r\n\r\n" + chunks + b"0\r\nX-Trailer: t\r\n\r\n"
        ),
        http_answer(body=b"[]"),
    )
    first = http.request("GET", f"{server.url}/x")
    second = http.request("GET", f"{server.url}/y")
    assert first.body == b'{"a": "1"}' and first.headers["x-a"] == "1, 2"
    assert second.body == b"[]"
    assert server.accepted == 1


def test_interim_100_and_a_head_split_across_writes(
    server: CannedServer, http: KeepAliveTransport
) -> None:
    def dribble(request: bytes, sock: socket.socket) -> bool:
        sock.sendall(b"HTTP/1.1 100 Continue\r\n\r\n")
        for piece in (b"HTTP/1.1 201 Cre", b"ated\r\nContent-Le", b"ngth: 2\r\n\r\n{", b"}"):
            sock.sendall(piece)
            time.sleep(0.01)
        return True

    server.queue(dribble)
    response = http.request("GET", f"{server.url}/x")
    assert (response.status, response.reason, response.body) == (201, "Created", b"{}")


def test_connection_close_and_close_delimited_bodies_are_not_reused(
    server: CannedServer, http: KeepAliveTransport
) -> None:
    server.queue(
        http_answer(body=b"[1]", headers={"Connection": "close"}),
        raw_answer(b"HTTP/1.1 200 OK\r\n\r\n[2]", close=True),  # no length: ends at the close
        http_answer(body=b"[3]"),
    )
    bodies = [http.request("GET", f"{server.url}/{i}").body for i in range(3)]
    assert bodies == [b"[1]", b"[2]", b"[3]"]
    assert server.accepted == 3


def test_a_server_keep_alive_timeout_lowers_the_idle_bound(
    server: CannedServer, http: KeepAliveTransport
) -> None:
    server.queue(http_answer(headers={"Keep-Alive": "timeout=1, max=100"}))
    for _ in range(2):
        http.request("GET", f"{server.url}/x")
    assert server.accepted == 2  # "timeout=1" leaves no safe idle time at all


def test_a_bad_status_line_or_a_close_without_answer_is_unanswered(
    server: CannedServer, http: KeepAliveTransport
) -> None:
    server.queue(raw_answer(b"HTTX/1.1 200 OK\r\n\r\n"), raw_answer(b"", close=True))
    for _ in range(2):
        with pytest.raises(Unanswered) as err:
            http.request("POST", f"{server.url}/fapi/v1/order", None, "a=1")
        assert not err.value.timeout


def test_the_timeout_bounds_the_whole_response_not_each_read(
    server: CannedServer, http: KeepAliveTransport
) -> None:
    def trickle(request: bytes, sock: socket.socket) -> bool:
        sock.sendall(b"HTTP/1.1 200 OK\r\nContent-Length: 100\r\n\r\n")
        for _ in range(100):
            time.sleep(0.05)
            sock.sendall(b" ")
        return True

    server.queue(trickle)
    started = time.monotonic()
    with pytest.raises(Unanswered) as err:
        http.request("GET", f"{server.url}/x")
    assert err.value.timeout
    assert time.monotonic() - started < 1.6  # timeout 1 s, a byte every 50 ms


def test_refused_connection_is_not_sent() -> None:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    http = KeepAliveTransport(1.0)
    with pytest.raises(NotSent) as err:
        http.request("GET", f"http://127.0.0.1:{port}/x")
    assert not err.value.timeout


def test_line_breaks_in_headers_or_spaces_in_the_target_are_refused(
    server: CannedServer, http: KeepAliveTransport
) -> None:
    with pytest.raises(ValueError):
        http.request("GET", f"{server.url}/x", {"X-MBX-APIKEY": "k\r\nEvil: 1"})
    with pytest.raises(ValueError):
        http.request("GET", f"{server.url}/x y")
    assert server.requests == []


def test_connections_of_ended_threads_are_closed(server: CannedServer) -> None:
    http = KeepAliveTransport(1.0)
    for _ in range(2):
        worker = threading.Thread(target=http.request, args=("GET", f"{server.url}/x"))
        worker.start()
        worker.join()
    http.request("GET", f"{server.url}/x")  # the third connection sweeps the first two
    assert server.accepted == 3
    assert len(http._all) == 1
    http.close()


@pytest.fixture(scope="module")
def tls(tmp_path_factory: pytest.TempPathFactory) -> tuple[object, object]:
    pytest.importorskip("cryptography")
    return make_tls(Path(tmp_path_factory.mktemp("tls")))


def test_tls_keeps_one_connection(tls: tuple[object, object]) -> None:
    server_ctx, client_ctx = tls
    with CannedServer(tls=server_ctx) as server:  # type: ignore[arg-type]
        http = KeepAliveTransport(2.0, tls_context=client_ctx)  # type: ignore[arg-type]
        bodies = [http.request("GET", f"{server.url}/x").body for _ in range(5)]
        http.close()
    assert bodies == [b"{}"] * 5
    assert server.accepted == 1


def test_an_untrusted_certificate_is_refused_before_anything_is_sent(
    tls: tuple[object, object],
) -> None:
    server_ctx, _ = tls
    with CannedServer(tls=server_ctx) as server:  # type: ignore[arg-type]
        http = KeepAliveTransport(2.0)  # certifi's bundle: a self-signed cert is refused
        with pytest.raises(TlsFailed):
            http.request("GET", f"{server.url}/x")
        ours = SignedRest(make_binanceusdm(server.url, "k", "s"), http)
        theirs = make_binanceusdm(server.url, "k", "s")
        for ex in (ours, theirs):  # requests' SSLError is a ConnectionError to ccxt
            with pytest.raises(ccxt.NetworkError) as err:
                ex.fetch(f"{server.url}/fapi/v1/time")
            assert type(err.value) is ccxt.NetworkError
        theirs.session.close()
        http.close()
    assert server.requests == []
