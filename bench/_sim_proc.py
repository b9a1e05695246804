"""Helpers for the simulator benchmarks: run servers in subprocesses (no shared GIL)."""

from __future__ import annotations

import ctypes
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def wait_port(port: int, timeout: float = 15.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        with socket.socket() as s:
            if s.connect_ex(("127.0.0.1", port)) == 0:
                return
        time.sleep(0.05)
    raise RuntimeError(f"nothing listening on {port}")


_PR_SET_PDEATHSIG = 1


def _die_with_parent() -> None:
    """In the child: SIGTERM when the bench dies, however it dies (a bench killed with
    SIGKILL or ``os._exit`` otherwise leaves its simulator running, firehose and all)."""
    if sys.platform == "linux":
        ctypes.CDLL(None, use_errno=True).prctl(_PR_SET_PDEATHSIG, signal.SIGTERM)


@contextmanager
def process(args: list[str], port: int) -> Iterator[subprocess.Popen[bytes]]:
    proc = subprocess.Popen(
        [sys.executable, *args], stdout=subprocess.DEVNULL, preexec_fn=_die_with_parent
    )
    try:
        wait_port(port)
        yield proc
    finally:
        proc.terminate()
        proc.wait(10)


@contextmanager
def sim(port: int, *extra: str) -> Iterator[subprocess.Popen[bytes]]:
    with process(["-m", "pms.sim.cli", "--port", str(port), "--paused", *extra], port) as p:
        yield p
