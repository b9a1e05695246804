"""``pms worker`` serves Dramatiq's Prometheus metrics (SPEC §9: "Dramatiq's own middleware
for workers"): counters of every worker process of the fleet, added up by one exposition
process, at ``PMS_WORKER_METRICS_HOST:PORT``; the samples' directory goes with the fleet.
Real workers in a subprocess, real Redis."""

from __future__ import annotations

import glob
import os
import re
import socket
import tempfile
import urllib.request
from pathlib import Path

import pytest

from pms.config import Settings
from tests.support import Gateway, WorkerFleet, wait_for

pytestmark = pytest.mark.slow
METRICS_DIRS = os.path.join(tempfile.gettempdir(), "pms-worker-metrics-*")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


def scrape(port: int) -> str:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/", timeout=2) as response:
            text: str = response.read().decode()
            return text
    except OSError:
        return ""


def sample(text: str, name: str, **labels: str) -> float | None:
    """The value of ``name{labels}`` in a Prometheus text page (labels in any order)."""
    for line in text.splitlines():
        match = re.fullmatch(r"(\w+)\{(.*)\} (\S+)", line)
        if not match or match.group(1) != name:
            continue
        found = dict(re.findall(r'(\w+)="([^"]*)"', match.group(2)))
        if all(found.get(k) == v for k, v in labels.items()):
            return float(match.group(3))
    return None


def test_the_fleet_serves_dramatiq_metrics_of_all_its_processes(
    settings: Settings, tmp_path: Path
) -> None:
    port = free_port()
    env = os.environ.copy() | {"PMS_WORKER_METRICS_PORT": str(port), "PMS_LOG_LEVEL": "INFO"}
    before = set(glob.glob(METRICS_DIRS))
    gateway = Gateway(settings)
    try:
        with WorkerFleet(env, processes=2, threads=2, log_path=tmp_path / "workers.log"):
            for _ in range(6):  # spread over both processes by whoever takes them
                assert gateway.send("ping")["ok"]
            page = wait_for(
                lambda: (
                    text
                    if (
                        sample(text := scrape(port), "dramatiq_messages_total", actor_name="ping")
                        or 0
                    )
                    >= 6
                    else None
                ),
                30,
                message="6 pings counted on the metrics page",
            )
            assert (
                sample(page, "dramatiq_messages_total", actor_name="ping", queue_name="pms.trading")
                == 6
            )
            assert sample(page, "dramatiq_message_errors_total", actor_name="ping") in (None, 0.0)
            assert "dramatiq_message_duration_milliseconds_bucket" in page
            run_dirs = set(glob.glob(METRICS_DIRS)) - before
            assert len(run_dirs) == 1, run_dirs  # this run's own samples
    finally:
        gateway.close()
    assert not (set(glob.glob(METRICS_DIRS)) - before), "the samples' directory is removed"
    assert scrape(port) == ""  # the exposition process stopped with the fleet


def test_port_zero_serves_nothing(settings: Settings, tmp_path: Path) -> None:
    port = free_port()
    env = os.environ.copy() | {"PMS_WORKER_METRICS_PORT": "0", "dramatiq_prom_port": str(port)}
    before = set(glob.glob(METRICS_DIRS))
    gateway = Gateway(settings)
    try:
        with WorkerFleet(env, processes=1, threads=2, log_path=tmp_path / "workers.log"):
            assert gateway.send("ping")["ok"]  # the fleet is up and served a command
            assert scrape(port) == ""
            assert set(glob.glob(METRICS_DIRS)) == before
    finally:
        gateway.close()
