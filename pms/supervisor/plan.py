"""Which processes ``pms up`` runs: every engine command registered in ``pms``, in order.

Order matters at start (the simulator before anything that calls it); at stop the simulator
goes once every other process is down (``stop_last``). A command that is not registered (an
engine process still being built) is skipped.
"""

from __future__ import annotations

import sys
from dataclasses import dataclass
from urllib.parse import urlsplit

from pms.config import ExchangeKind, Settings
from pms.supervisor.child import ChildSpec

PMS = (sys.executable, "-m", "pms.cli.main")


@dataclass(frozen=True, slots=True)
class Options:
    workers: int = 1
    threads: int = 8
    risk_threads: int = 4
    seed: int | None = None
    worker_shutdown_ms: int = 15_000


def sim_address(settings: Settings) -> tuple[str, int]:
    parts = urlsplit(settings.sim_url)
    return parts.hostname or "127.0.0.1", parts.port or 8765


def engine_specs(settings: Settings, registered: frozenset[str], opts: Options) -> list[ChildSpec]:
    specs: list[ChildSpec] = []
    if settings.exchange is ExchangeKind.SIM and "sim" in registered:
        host, port = sim_address(settings)
        argv = [*PMS, "sim", "--host", host, "--port", str(port)]
        if opts.seed is not None:
            argv += ["--seed", str(opts.seed)]
        specs.append(
            ChildSpec("sim", tuple(argv), port=(host, port), stop_timeout_s=10.0, stop_last=True)
        )
    worker_stop = opts.worker_shutdown_ms / 1000 + 5
    if "worker" in registered:
        flags = ("--shutdown-timeout-ms", str(opts.worker_shutdown_ms))
        specs.append(
            ChildSpec(
                "worker",
                (*PMS, "worker", "-p", str(opts.workers), "-t", str(opts.threads), *flags),
                stop_timeout_s=worker_stop,
            )
        )
        # Liquidations never wait behind a burst of orders: pms.risk has a fleet of its own,
        # whose metrics (one exposition port per fleet) are served on the next port.
        metrics = settings.worker_metrics_port
        specs.append(
            ChildSpec(
                "risk-worker",
                (*PMS, "worker", "-Q", "pms.risk", "-p", "1", "-t", str(opts.risk_threads), *flags),
                env={"PMS_WORKER_METRICS_PORT": str(metrics + 1 if 0 < metrics < 65535 else 0)},
                stop_timeout_s=worker_stop,
            )
        )
    for name in ("streamer", "scheduler"):
        if name in registered:
            specs.append(ChildSpec(name, (*PMS, name), stop_timeout_s=15.0))
    if "api" in registered:
        host, port = settings.api_host, settings.api_port
        specs.append(ChildSpec("api", (*PMS, "api"), port=(host, port), stop_timeout_s=10.0))
    return specs


def registered_commands() -> frozenset[str]:
    from pms.cli.main import build_parser

    parser = build_parser()
    for action in parser._actions:
        if action.dest == "command" and action.choices is not None:
            return frozenset(action.choices)
    return frozenset()
