"""One supervised child: started in a session (process group) of its own, output prefixed.

A child gets its own process group so that (1) a terminal's Ctrl-C reaches only the
supervisor, which then stops children in order, and (2) stopping a child signals its whole
group (Dramatiq's master and its forked workers) and nothing is left behind. On Linux a child
also gets ``PR_SET_PDEATHSIG``: if the supervisor is killed outright, the child is told.
"""

from __future__ import annotations

import contextlib
import ctypes
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import IO

PR_SET_PDEATHSIG = 1
PREFIX_WIDTH = 12


@dataclass(frozen=True, slots=True)
class ChildSpec:
    name: str
    argv: tuple[str, ...]
    env: Mapping[str, str] = field(default_factory=dict)
    stop_signal: signal.Signals = signal.SIGTERM
    stop_timeout_s: float = 20.0
    user: str | None = None  # run as this user (Postgres refuses to run as root)
    port: tuple[str, int] | None = None  # started = accepting TCP connections here
    # Stopped only once the others are down: what they call while finishing (the simulator
    # in sim mode: workers finish in-flight commands against it).
    stop_last: bool = False


def _die_with_parent() -> None:
    with contextlib.suppress(Exception):
        libc = ctypes.CDLL("libc.so.6", use_errno=True)
        libc.prctl(PR_SET_PDEATHSIG, signal.SIGTERM)


class Output:
    """Interleaves children's lines on one stream, whole lines only, prefixed by name."""

    def __init__(self, stream: IO[str] | None = None) -> None:
        self.stream = stream or sys.stdout
        self.lock = threading.Lock()

    def line(self, name: str, text: str) -> None:
        with self.lock:
            self.stream.write(f"{name:<{PREFIX_WIDTH}}| {text.rstrip()}\n")
            self.stream.flush()


class Child:
    def __init__(self, spec: ChildSpec, output: Output, base_env: Mapping[str, str]) -> None:
        self.spec = spec
        self.output = output
        self.env = {**base_env, **spec.env}
        self.proc: subprocess.Popen[bytes] | None = None
        self.started_at = 0.0
        self.failures = 0
        self.restart_at: float | None = None
        self._pump: threading.Thread | None = None

    @property
    def name(self) -> str:
        return self.spec.name

    @property
    def pid(self) -> int | None:
        return self.proc.pid if self.proc else None

    def start(self) -> None:
        self.proc = subprocess.Popen(
            self.spec.argv,
            env=self.env,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            start_new_session=True,
            preexec_fn=_die_with_parent if sys.platform == "linux" else None,
            user=self.spec.user,
        )
        self.started_at = time.monotonic()
        self.restart_at = None
        stdout = self.proc.stdout
        assert stdout is not None
        self._pump = threading.Thread(
            target=self._copy, args=(stdout,), name=f"log-{self.name}", daemon=True
        )
        self._pump.start()

    def _copy(self, stdout: IO[bytes]) -> None:
        for raw in iter(stdout.readline, b""):
            self.output.line(self.name, raw.decode("utf-8", "replace"))
        stdout.close()

    def poll(self) -> int | None:
        """The exit code once the child has exited, else None."""
        return None if self.proc is None else self.proc.poll()

    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def signal(self, sig: signal.Signals) -> None:
        if self.proc is None:
            return
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(self.proc.pid, sig)

    def stop(self) -> None:
        """The stop signal to the group leader only: Dramatiq's master forwards it to its
        workers, and a worker that got it twice would abandon its in-flight commands."""
        if self.proc is not None and self.proc.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                self.proc.send_signal(self.spec.stop_signal)

    def group_alive(self) -> bool:
        """True while any process of the child's group exists (forked workers included)."""
        if self.proc is None:
            return False
        self.proc.poll()  # reap the leader if it exited
        try:
            os.killpg(self.proc.pid, 0)
        except ProcessLookupError:
            return False
        except PermissionError:
            return True
        return True

    def finish_output(self, timeout: float = 2.0) -> None:
        if self._pump is not None:
            self._pump.join(timeout)


def wait_all(children: list[Child], timeout: float, until: Callable[[Child], bool]) -> list[Child]:
    """Wait until ``until(child)`` is false for every child; returns the ones still true."""
    deadline = time.monotonic() + timeout
    pending = [c for c in children if until(c)]
    while pending and time.monotonic() < deadline:
        time.sleep(0.05)
        pending = [c for c in pending if until(c)]
    return pending
