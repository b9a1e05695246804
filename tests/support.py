"""Real processes for tests: worker fleets started as `pms worker`, and a Python gateway that
sends commands the way the Node gateway does (subscribe, enqueue, await; GET fallback)."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import redis
from sqlalchemy import Engine, event

from pms.config import Settings
from pms.messaging import wire
from pms.messaging.results import ResultStore

ROOT = Path(__file__).parents[1]


def wait_for(
    condition: Callable[[], Any],
    timeout: float = 10.0,
    interval: float = 0.02,
    message: str = "condition",
) -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = condition()
        if value:
            return value
        time.sleep(interval)
    raise AssertionError(f"timed out after {timeout}s waiting for {message}")


@contextmanager
def statements_on(engine: Engine) -> Iterator[list[str]]:
    """The SQL statements sent through ``engine`` while the block runs, in order."""
    statements: list[str] = []

    def count(*args: Any) -> None:
        statements.append(args[2])

    event.listen(engine, "before_cursor_execute", count)
    try:
        yield statements
    finally:
        event.remove(engine, "before_cursor_execute", count)


class WorkerFleet:
    """`pms worker` in its own process group, so a test can SIGKILL the whole fleet."""

    def __init__(
        self,
        env: dict[str, str],
        *,
        processes: int = 1,
        threads: int = 4,
        log_path: Path | None = None,
    ) -> None:
        self.env = env
        self.processes = processes
        self.threads = threads
        self.log_path = log_path
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self) -> WorkerFleet:
        out = open(self.log_path, "ab") if self.log_path else subprocess.DEVNULL  # noqa: SIM115
        try:
            self.proc = self._spawn(out)
        finally:
            if not isinstance(out, int):
                out.close()  # the child holds its own copy
        return self

    def _spawn(self, out: Any) -> subprocess.Popen[bytes]:
        return subprocess.Popen(
            [
                sys.executable,
                "-m",
                "pms.cli.main",
                "worker",
                "--processes",
                str(self.processes),
                "--threads",
                str(self.threads),
            ],
            cwd=ROOT,
            env=self.env,
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )

    def kill(self) -> None:
        if self.proc and self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGKILL)
            self.proc.wait(10)

    def stop(self) -> None:
        if self.proc and self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGTERM)
            try:
                self.proc.wait(30)
            except subprocess.TimeoutExpired:
                self.kill()

    def __enter__(self) -> WorkerFleet:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()


class Gateway:
    """Enqueues commands in the Dramatiq wire format and waits for ``pms:result:{requestId}``.

    (The Node client subscribes to ``pms:results`` before enqueueing; polling the key is
    enough for tests and keeps this helper small.)
    """

    def __init__(self, settings: Settings, user: str = "gateway-test") -> None:
        self.settings = settings
        self.user = user
        self.client = redis.Redis.from_url(settings.redis_url)
        self.results = ResultStore(self.client, prefix=settings.redis_prefix)

    def enqueue(self, actor: str, command: dict[str, Any]) -> dict[str, Any]:
        return wire.send(
            self.client,
            self.settings.dramatiq_namespace,
            actor,
            command,
            timestamp_ms=int(time.time() * 1000),
        )

    def command(self, **fields: Any) -> dict[str, Any]:
        return {
            "requestId": fields.pop("requestId", uuid.uuid4().hex),
            "userId": fields.pop("userId", self.user),
            **fields,
        }

    def send(self, actor: str, timeout: float = 20.0, **fields: Any) -> dict[str, Any]:
        command = self.command(**fields)
        self.enqueue(actor, command)
        return self.wait(command["requestId"], timeout)

    def wait(self, request_id: str, timeout: float = 20.0) -> dict[str, Any]:
        return wait_for(
            lambda: self.results.get(request_id),
            timeout,
            interval=0.005,
            message=f"result of {request_id}",
        )

    def close(self) -> None:
        self.client.close()
