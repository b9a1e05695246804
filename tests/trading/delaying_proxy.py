"""A TCP proxy in front of the simulator that holds back chosen requests: a request the
client wrote in full that reaches the exchange late (a slow path, a queue in front of the
matching engine), the case Binance documents as "execution status unknown"."""

from __future__ import annotations

import contextlib
import socket
import threading
import time


class DelayingProxy:
    def __init__(self, upstream_port: int, prefix: bytes, delay_s: float, count: int = 1) -> None:
        self.upstream_port = upstream_port
        self.prefix = prefix
        self.delay_s = delay_s
        self.remaining = count
        self._lock = threading.Lock()
        self._socks: list[socket.socket] = []
        self._srv = socket.create_server(("127.0.0.1", 0))
        self.port = self._srv.getsockname()[1]
        self.url = f"http://127.0.0.1:{self.port}"
        threading.Thread(target=self._accept, daemon=True).start()

    def _take(self, data: bytes) -> bool:
        with self._lock:
            if self.remaining > 0 and data.startswith(self.prefix):
                self.remaining -= 1
                return True
            return False

    def _accept(self) -> None:
        while True:
            try:
                client, _ = self._srv.accept()
            except OSError:
                return
            up = socket.create_connection(("127.0.0.1", self.upstream_port))
            with self._lock:
                self._socks += [client, up]
            threading.Thread(target=self._up, args=(client, up), daemon=True).start()
            threading.Thread(target=self._down, args=(up, client), daemon=True).start()

    def _up(self, client: socket.socket, up: socket.socket) -> None:
        while True:
            try:
                data = client.recv(65536)
            except OSError:
                return
            if not data:
                return  # the client gave up: the upstream stays open (what was sent stands)
            if self._take(data):
                time.sleep(self.delay_s)
            try:
                up.sendall(data)
            except OSError:
                return

    def _down(self, up: socket.socket, client: socket.socket) -> None:
        while True:
            try:
                data = up.recv(65536)
            except OSError:
                return
            if not data:
                return
            with contextlib.suppress(OSError):  # the client is gone; keep draining
                client.sendall(data)

    def close(self) -> None:
        self._srv.close()
        with self._lock:
            for sock in self._socks:
                sock.close()
