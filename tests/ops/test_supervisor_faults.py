"""``pms up``'s supervisor: an engine child that fails to start, a long crash loop, and the
stop order (the simulator outlives the workers finishing in-flight commands)."""

from __future__ import annotations

import io
import os
import socket
import sys
import threading

import pytest

from pms.supervisor import group
from pms.supervisor.child import ChildSpec, Output
from pms.supervisor.group import Supervisor
from tests.support import wait_for

UP = "import time; print('up', flush=True); time.sleep(600)"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


def run_in_thread(sup: Supervisor) -> tuple[threading.Thread, list[BaseException], list[int]]:
    errors: list[BaseException] = []
    codes: list[int] = []

    def target() -> None:
        try:
            codes.append(sup.run())
        except BaseException as exc:
            errors.append(exc)

    runner = threading.Thread(target=target, daemon=True)
    runner.start()
    return runner, errors, codes


def test_an_engine_child_that_fails_to_start_does_not_leave_a_half_started_system() -> None:
    """The simulator exits before it listens (port taken, bad flag, import error): ``run()``
    used to break out of the start loop and then *watch* forever, the workers, streamer,
    scheduler and API after it never started, and ``pms up`` neither exited nor said so. It
    now stops everything and exits 1."""
    stream = io.StringIO()
    sup = Supervisor(
        [],
        [
            ChildSpec(
                "sim",
                (sys.executable, "-c", "import sys; sys.exit(1)"),
                port=("127.0.0.1", free_port()),
                stop_timeout_s=2.0,
            ),
            ChildSpec("worker", (sys.executable, "-c", UP), stop_timeout_s=2.0),
        ],
        env=dict(os.environ),
        output=Output(stream),
    )
    runner, errors, codes = run_in_thread(sup)
    runner.join(30)
    assert not runner.is_alive() and not errors
    assert codes == [1]
    text = stream.getvalue()
    assert "sim did not start: stopping everything" in text
    assert "starting worker" not in text


def test_a_long_crash_loop_does_not_take_the_whole_group_down(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """``delay = min(BACKOFF_START_S * 2**failures, BACKOFF_MAX_S)``: ``failures`` grows
    without bound while a child crash-loops, and once it reaches 1024 the float product
    raises OverflowError in ``_watch`` — ``run()`` unwinds and shuts every healthy child
    down. At the real 30 s cap that is ~8.5 hours of crash-looping (e.g. a streamer that
    cannot reach the exchange overnight). The backoff is shortened here and the counter
    starts at 1020, as it would be after ~8.5 hours; the child really crashes five times."""
    monkeypatch.setattr(group, "BACKOFF_MAX_S", 0.05)
    monkeypatch.setattr(group, "TICK_S", 0.02)
    stream = io.StringIO()
    sup = Supervisor(
        [],
        [
            ChildSpec("healthy", (sys.executable, "-c", UP), stop_timeout_s=2.0),
            ChildSpec("crashy", ("/bin/sh", "-c", "exit 3"), stop_timeout_s=2.0),
        ],
        env=dict(os.environ),
        output=Output(stream),
    )
    sup.engine[1].failures = 1020
    runner, errors, _codes = run_in_thread(sup)
    try:
        wait_for(
            lambda: "attempt 1026" in stream.getvalue() or not runner.is_alive(),
            20,
            message="crash loop past 1024 failures",
        )
        assert not errors, f"the supervisor died: {errors[0]!r}"
        assert runner.is_alive(), f"the whole group went down:\n{stream.getvalue()[-800:]}"
    finally:
        sup.stopping.set()
        runner.join(30)


SIM = (
    "import signal, sys, time\n"
    "signal.signal(signal.SIGTERM, lambda *a: (print('term', flush=True), sys.exit(0)))\n"
    "print('up', flush=True)\n"
    "time.sleep(600)\n"
)
# A worker that, on SIGTERM, still needs the exchange for one second (its in-flight order).
WORKER = (
    "import signal, sys, time\n"
    "def term(*a):\n"
    "    print('finishing in-flight', flush=True)\n"
    "    time.sleep(1.0)\n"
    "    print('done', flush=True)\n"
    "    sys.exit(0)\n"
    "signal.signal(signal.SIGTERM, term)\n"
    "print('up', flush=True)\n"
    "time.sleep(600)\n"
)


def test_the_simulator_outlives_workers_finishing_in_flight_commands() -> None:
    """plan.py: "Order matters at start (the simulator before anything that calls it) and is
    reversed at stop". ``_stop`` signals every engine child at once, so the simulator goes
    down while workers are still finishing their in-flight commands against it."""
    stream = io.StringIO()
    sup = Supervisor(
        [],
        [
            ChildSpec("sim", (sys.executable, "-c", SIM), stop_timeout_s=5.0, stop_last=True),
            ChildSpec("worker", (sys.executable, "-c", WORKER), stop_timeout_s=5.0),
        ],
        env=dict(os.environ),
        output=Output(stream),
    )
    runner, _errors, _codes = run_in_thread(sup)
    wait_for(
        lambda: "sim         | up" in stream.getvalue() and "worker      | up" in stream.getvalue(),
        20,
        message="both up",
    )
    sup.stopping.set()
    runner.join(30)
    lines = stream.getvalue().splitlines()
    sim_term = lines.index("sim         | term")
    worker_done = lines.index("worker      | done")
    assert worker_done < sim_term, "the simulator was stopped while a worker was still using it"
