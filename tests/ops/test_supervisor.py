"""The supervisor with stand-in children: restart with backoff, clean stop, no orphans."""

from __future__ import annotations

import io
import os
import signal
import sys
import threading
import time

from pms.supervisor.child import ChildSpec, Output
from pms.supervisor.group import Supervisor
from tests.support import wait_for

# A parent that forks a grandchild (like Dramatiq's master) and ignores nothing.
FORKER = r"""
import os, sys, time
child = os.fork()
if child == 0:
    os.write(1, f"grandchild {os.getpid()}\n".encode())  # one write: lines never interleave
    time.sleep(600)
    sys.exit(0)
os.write(1, f"parent {os.getpid()}\n".encode())
time.sleep(600)
"""
DIES = "import sys; print('dying', flush=True); sys.exit(3)"


def pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    try:  # a zombie is dead for our purpose
        with open(f"/proc/{pid}/stat") as f:
            return f.read().split()[2] != "Z"
    except FileNotFoundError:
        return False


def test_children_are_prefixed_restarted_and_all_gone_after_stop() -> None:
    stream = io.StringIO()
    sup = Supervisor(
        [],
        [
            ChildSpec("forker", (sys.executable, "-c", FORKER), stop_timeout_s=2.0),
            ChildSpec("dies", (sys.executable, "-c", DIES)),
        ],
        env=dict(os.environ),
        output=Output(stream),
    )
    runner = threading.Thread(target=sup.run)
    runner.start()
    try:
        wait_for(
            lambda: "grandchild" in stream.getvalue() and "| parent" in stream.getvalue(),
            20,
            message="parent and grandchild started",
        )
        wait_for(lambda: "restarting dies" in stream.getvalue(), 20, message="a restart")
        pids = [
            int(line.split()[-1])
            for line in stream.getvalue().splitlines()
            if line.startswith("forker") and ("parent" in line or "grandchild" in line)
        ]
    finally:
        sup.stopping.set()
        runner.join(30)
    text = stream.getvalue()
    assert not runner.is_alive()
    assert "dies        | dying" in text
    assert "dies exited with code 3; restarting in 1 s" in text
    assert len(pids) == 2
    # The parent got SIGTERM; the grandchild, still alive after the timeout, got SIGKILL.
    assert "forker did not stop in 2 s: SIGKILL" in text
    wait_for(lambda: not any(pid_alive(p) for p in pids), 5, message="no orphans")


def test_the_stop_signal_goes_to_the_leader_only() -> None:
    """Dramatiq's master forwards SIGTERM to its workers; a worker signalled twice would drop
    its in-flight commands, so the supervisor signals the leader and waits for the group."""
    script = (
        "import signal, sys, time\n"
        "signal.signal(signal.SIGTERM, lambda *a: (print('term', flush=True), sys.exit(0)))\n"
        "print('up', flush=True)\n"
        "time.sleep(600)\n"
    )
    stream = io.StringIO()
    sup = Supervisor(
        [],
        [ChildSpec("polite", (sys.executable, "-c", script), stop_signal=signal.SIGTERM)],
        env=dict(os.environ),
        output=Output(stream),
    )
    runner = threading.Thread(target=sup.run)
    runner.start()
    wait_for(lambda: "polite      | up" in stream.getvalue(), 20, message="child up")
    started = time.monotonic()
    sup.stopping.set()
    runner.join(20)
    assert time.monotonic() - started < 5
    assert "polite      | term" in stream.getvalue()
    assert "polite stopped (code 0)" in stream.getvalue()
