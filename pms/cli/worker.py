"""``pms worker``: Dramatiq worker processes for the actors in ``workers/``.

Runs Dramatiq's own CLI (master + forked worker processes, graceful shutdown on SIGTERM/SIGINT:
in-flight commands finish, prefetched ones are re-queued; a second signal kills) on the module
``workers``, which builds :class:`pms.messaging.broker.FastRedisBroker` from the settings.

Starvation: with no ``--queues`` a process consumes every queue and its threads take commands
by actor priority, then arrival. To guarantee liquidations never wait behind a burst of orders,
run a dedicated process for ``pms.risk`` next to the general ones::

    pms worker                                   # all queues
    pms worker --queues pms.risk --processes 1 --threads 4
"""

from __future__ import annotations

import argparse
import os
import shutil
import sys
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from pms.config import Settings, load_settings
from pms.messaging.wire import QUEUES

DEFAULT_PROCESSES = 2
DEFAULT_THREADS = 8
DEFAULT_SHUTDOWN_TIMEOUT_MS = 30_000


def register(sub: Any) -> None:
    parser: argparse.ArgumentParser = sub.add_parser(
        "worker",
        help="run Dramatiq worker processes (trading, accounts, algo, risk, sync queues)",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument(
        "--processes", "-p", type=int, default=DEFAULT_PROCESSES, help="worker processes"
    )
    parser.add_argument(
        "--threads", "-t", type=int, default=DEFAULT_THREADS, help="threads per process"
    )
    parser.add_argument(
        "--queues",
        "-Q",
        nargs="+",
        choices=QUEUES,
        default=None,
        help="consume only these queues (default: all)",
    )
    parser.add_argument(
        "--shutdown-timeout-ms",
        type=int,
        default=DEFAULT_SHUTDOWN_TIMEOUT_MS,
        help="how long in-flight commands may run after SIGTERM",
    )
    parser.add_argument(
        "--module",
        default="workers",
        help=argparse.SUPPRESS,  # tests and benchmarks load their own actor module
    )
    parser.add_argument("--path", nargs="+", default=None, help=argparse.SUPPRESS)
    parser.add_argument("--verbose", "-v", action="count", default=0)
    parser.set_defaults(func=run)


def dramatiq_argv(args: argparse.Namespace) -> list[str]:
    argv = [
        args.module,
        "--processes",
        str(args.processes),
        "--threads",
        str(args.threads),
        "--worker-shutdown-timeout",
        str(args.shutdown_timeout_ms),
        "--path",
        *(args.path or [os.getcwd()]),
    ]
    if args.queues:
        argv += ["--queues", *args.queues]
    argv += ["-v"] * args.verbose
    return argv


def run(args: argparse.Namespace) -> int:
    from dramatiq import cli

    if args.processes < 1 or args.threads < 1:
        print("error: --processes and --threads must be ≥ 1", file=sys.stderr)
        return 2
    settings = load_settings()
    parsed = cli.make_argument_parser().parse_args(dramatiq_argv(args))  # type: ignore[no-untyped-call]
    with metrics_environment(settings):
        code: int = cli.main(parsed)  # type: ignore[no-untyped-call]
    return code


@contextmanager
def metrics_environment(settings: Settings) -> Iterator[str | None]:
    """Set up the fleet's metrics for Dramatiq's Prometheus middleware (added by
    ``workers.broker`` when ``PROMETHEUS_MULTIPROC_DIR`` is set): a directory of this run's
    own, where every worker process writes its samples (prometheus_client's multiprocess
    mode) and the exposition process (a Dramatiq fork) reads them all, and the address that
    process listens on. Set before the worker processes start, so they inherit it (a metric
    created at import, before the middleware's boot, is in multiprocess mode too); the
    directory goes when the fleet stops. Yields the directory (None when the port is 0)."""
    if not settings.worker_metrics_port:
        yield None
        return
    directory = tempfile.mkdtemp(prefix="pms-worker-metrics-")
    values = {
        "PROMETHEUS_MULTIPROC_DIR": directory,
        "dramatiq_prom_db": directory,
        "dramatiq_prom_host": settings.worker_metrics_host,
        "dramatiq_prom_port": str(settings.worker_metrics_port),
    }
    saved = {name: os.environ.get(name) for name in values}
    os.environ.update(values)
    try:
        yield directory
    finally:
        for name, value in saved.items():
            if value is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = value
        shutil.rmtree(directory, ignore_errors=True)
