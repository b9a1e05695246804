"""The supervised group: start in order, restart what dies, stop cleanly on a signal.

Start: private services (if any) → wait for their ports → migrate → engine processes in plan
order, each with a port waiting for it to accept before the next starts. A child that exits
while the group is running is restarted after a backoff (1 s, doubling to 30 s; reset after a
minute of good health). An engine child that fails to start stops the whole group (exit 1):
never a system running with only part of it. SIGINT/SIGTERM: every engine child's group gets
its stop signal at once (workers finish in-flight commands, re-queue prefetched ones), then
the group waits; stragglers get SIGKILL; then the children marked ``stop_last`` (the
simulator, which those in-flight commands still call), then the private services. A second
Ctrl-C kills at once.
"""

from __future__ import annotations

import os
import signal
import socket
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Mapping
from dataclasses import dataclass

from pms.supervisor.child import Child, ChildSpec, Output, wait_all

BACKOFF_START_S = 1.0
BACKOFF_MAX_S = 30.0
HEALTHY_AFTER_S = 60.0
PORT_WAIT_S = 60.0
TICK_S = 0.2


@dataclass(frozen=True, slots=True)
class ReadyProbe:
    url: str
    token: str = ""


class Supervisor:
    def __init__(
        self,
        services: list[ChildSpec],
        engine: list[ChildSpec],
        *,
        env: Mapping[str, str],
        output: Output | None = None,
        before_engine: Callable[[], None] | None = None,
        ready: ReadyProbe | None = None,
    ) -> None:
        self.output = output or Output()
        self.services = [Child(s, self.output, env) for s in services]
        self.engine = [Child(s, self.output, env) for s in engine]
        self.before_engine = before_engine
        self.ready = ready
        self.stopping = threading.Event()
        self.killing = False
        self.started = time.monotonic()

    def say(self, text: str) -> None:
        self.output.line("up", text)

    # -- signals ---------------------------------------------------------------------------

    def install_signals(self) -> None:
        signal.signal(signal.SIGINT, self._on_signal)
        signal.signal(signal.SIGTERM, self._on_signal)

    def _on_signal(self, signum: int, _frame: object) -> None:
        if self.stopping.is_set():
            if not self.killing:
                self.killing = True
                self.say("second signal: killing everything now")
                for child in [*self.engine, *self.services]:
                    child.signal(signal.SIGKILL)
            return
        self.say(f"{signal.Signals(signum).name}: stopping (Ctrl-C again to kill)")
        self.stopping.set()

    # -- run -------------------------------------------------------------------------------

    def run(self) -> int:
        try:
            for child in self.services:
                if not self._start(child):
                    return 1
            if self.stopping.is_set():
                return 0
            if self.before_engine is not None:
                self.before_engine()
            for child in self.engine:
                if self.stopping.is_set():
                    break
                if not self._start(child):
                    self.say(f"{child.name} did not start: stopping everything")
                    return 1
            if self.ready is not None and not self.stopping.is_set():
                threading.Thread(target=self._announce_ready, daemon=True).start()
            self._watch()
            return 0
        finally:
            self.shutdown()

    def _start(self, child: Child) -> bool:
        self.say(f"starting {child.name}: {' '.join(child.spec.argv[1:])}")
        child.start()
        if child.spec.port is None:
            return True
        host, port = child.spec.port
        deadline = time.monotonic() + PORT_WAIT_S
        while time.monotonic() < deadline and not self.stopping.is_set():
            if not child.alive():
                self.say(f"{child.name} exited with code {child.poll()} before it listened")
                return False
            try:
                with socket.create_connection((host, port), timeout=0.5):
                    return True
            except OSError:
                time.sleep(0.1)
        if not self.stopping.is_set():
            self.say(f"{child.name} did not listen on {host}:{port} within {PORT_WAIT_S:.0f} s")
            return False
        return True

    def _watch(self) -> None:
        while not self.stopping.wait(TICK_S):
            now = time.monotonic()
            for child in [*self.services, *self.engine]:
                code = child.poll()
                if code is None:
                    if now - child.started_at > HEALTHY_AFTER_S:
                        child.failures = 0
                    continue
                if child.restart_at is None:
                    # The exponent capped: hours of crash-looping would overflow the float.
                    delay = min(BACKOFF_START_S * 2 ** min(child.failures, 16), BACKOFF_MAX_S)
                    child.failures += 1
                    child.restart_at = now + delay
                    self.say(f"{child.name} exited with code {code}; restarting in {delay:.0f} s")
                    child.signal(signal.SIGKILL)  # whatever it forked goes with it
                elif now >= child.restart_at:
                    self.say(f"restarting {child.name} (attempt {child.failures})")
                    child.start()

    def _announce_ready(self) -> None:
        assert self.ready is not None
        request = urllib.request.Request(self.ready.url)  # noqa: S310 (http:// from settings)
        if self.ready.token:
            request.add_header("Authorization", f"Bearer {self.ready.token}")
        while not self.stopping.is_set():
            try:
                with urllib.request.urlopen(request, timeout=3) as response:  # noqa: S310
                    if response.status == 200:
                        took = time.monotonic() - self.started
                        self.say(f"system ready in {took:.1f} s ({self.ready.url})")
                        return
            except (urllib.error.URLError, OSError):
                pass
            self.stopping.wait(0.5)

    # -- stop ------------------------------------------------------------------------------

    def shutdown(self) -> None:
        self.stopping.set()
        engine = list(reversed(self.engine))
        self._stop([c for c in engine if not c.spec.stop_last])
        self._stop([c for c in engine if c.spec.stop_last])
        self._stop(list(reversed(self.services)))
        self.say(f"stopped (pid {os.getpid()}); no child left")

    def _stop(self, children: list[Child]) -> None:
        running = [c for c in children if c.group_alive()]
        for child in running:
            child.stop()
        timeout = max((c.spec.stop_timeout_s for c in running), default=0.0)
        stragglers = wait_all(running, timeout, lambda c: c.group_alive())
        for child in stragglers:
            self.say(f"{child.name} did not stop in {child.spec.stop_timeout_s:.0f} s: SIGKILL")
            child.signal(signal.SIGKILL)
        wait_all(stragglers, 5.0, lambda c: c.group_alive())
        for child in children:
            child.finish_output()
            code = child.poll()
            if code is not None and child.pid is not None:
                self.say(f"{child.name} stopped (code {code})")
