"""``pms up``: the whole system as one supervised group, on the simulator by default.

Starts (each only if registered as a ``pms`` command): the simulator (PMS_EXCHANGE=sim), a
general worker fleet, a ``pms.risk`` worker fleet, the streamer, the scheduler and the control
API; migrates the database first. Redis and Postgres: the configured ones, or private ones
under ./var when nothing listens at a loopback address and the binaries are installed.

Logs of every process are interleaved on stdout, one line each, prefixed by process name.
A child that dies is restarted (backoff 1 s → 30 s). Ctrl-C (or SIGTERM) stops everything:
in-flight commands finish, prefetched ones are re-queued, no process is left behind.

    pms up                        # then, in another terminal: pms demo
    pms up --workers 2 --threads 16
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path
from typing import Any

from pms.config import Settings, load_settings


def _at_least_one(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a whole number: {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be 1 or more: {value}")
    return value


def register(sub: Any) -> None:
    parser: argparse.ArgumentParser = sub.add_parser(
        "up",
        help="run the whole system (sim, workers, streamer, scheduler, api) as one group",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--workers", type=_at_least_one, default=1, help="general worker processes")
    parser.add_argument(
        "--threads", type=_at_least_one, default=8, help="threads per worker process"
    )
    parser.add_argument(
        "--risk-threads", type=_at_least_one, default=4, help="threads of the pms.risk fleet"
    )
    parser.add_argument("--seed", type=int, default=None, help="simulator random-walk seed")
    parser.add_argument(
        "--json-logs", action="store_true", help="children log JSON (default: readable text)"
    )
    parser.set_defaults(func=run)


def _migrate(settings: Settings, say: Any) -> None:
    from sqlalchemy.exc import OperationalError

    from pms.db import migrate

    deadline = time.monotonic() + 30
    while True:
        try:
            migrate.upgrade(settings)
            break
        except OperationalError:  # a private Postgres that listens but is still starting
            if time.monotonic() > deadline:
                raise
            time.sleep(0.5)
    say(f"database at revision {migrate.current(settings)}")


def run(args: argparse.Namespace) -> int:
    from pms.supervisor.group import ReadyProbe, Supervisor
    from pms.supervisor.plan import Options, engine_specs, registered_commands
    from pms.supervisor.services import ServiceMissing, private_postgres, private_redis

    settings = load_settings()
    data_dir = Path(settings.data_dir)
    try:
        services = [
            s
            for s in (private_redis(settings, data_dir), private_postgres(settings, data_dir))
            if s is not None
        ]
    except ServiceMissing as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    opts = Options(
        workers=args.workers, threads=args.threads, risk_threads=args.risk_threads, seed=args.seed
    )
    engine = engine_specs(settings, registered_commands(), opts)
    env = dict(os.environ)  # the process edge: children inherit the operator's environment
    if args.json_logs:
        env["PMS_LOG_JSON"] = "true"
    elif "PMS_LOG_JSON" not in env:
        env["PMS_LOG_JSON"] = "false"
    token = settings.api_token.get_secret_value()
    ready_url = f"http://{settings.api_host}:{settings.api_port}/ready"
    supervisor = Supervisor(
        services,
        engine,
        env=env,
        before_engine=None,
        ready=ReadyProbe(ready_url, token) if any(s.name == "api" for s in engine) else None,
    )
    supervisor.before_engine = lambda: _migrate(settings, supervisor.say)
    supervisor.install_signals()
    for spec in services:
        supervisor.say(f"{spec.name}: nothing listens at the configured address; private one")
    return supervisor.run()
