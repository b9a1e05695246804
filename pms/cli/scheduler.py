"""``pms scheduler``: the periodic-job leader (a second copy waits as standby)."""

from __future__ import annotations

import argparse
import signal
import sys
import threading
from typing import Any

import redis

from pms.clock import SystemClock
from pms.config import load_settings
from pms.logging import configure_logging
from pms.scheduler.service import Job, SchedulerService


def register(sub: Any) -> None:
    parser: argparse.ArgumentParser = sub.add_parser(
        "scheduler",
        help="periodic jobs (order-sync, position-sync, funding); one leader via a Redis lock",
    )
    parser.add_argument("--order-sync-sec", type=float, default=30.0)
    parser.add_argument("--position-sync-sec", type=float, default=60.0)
    parser.add_argument(
        "--funding-sec", type=float, default=300.0, help="how often funding settlement runs"
    )
    parser.add_argument(
        "--lock-ttl-ms", type=int, default=5_000, help="a dead leader is replaced after this long"
    )
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    settings = load_settings()
    configure_logging(settings, process="scheduler")
    try:
        jobs = (
            Job("sync_orders", args.order_sync_sec),
            Job("sync_positions", args.position_sync_sec),
            Job("settle_funding", args.funding_sec),
        )
        service = SchedulerService(
            settings,
            redis.Redis.from_url(settings.redis_url),
            SystemClock(),
            jobs=jobs,
            lock_ttl_ms=args.lock_ttl_ms,
        )
    except ValueError as exc:
        print(f"pms scheduler: {exc}", file=sys.stderr)
        return 2
    done = threading.Event()

    def shutdown(*_: object) -> None:
        service.stop()
        done.set()

    signal.signal(signal.SIGTERM, shutdown)
    signal.signal(signal.SIGINT, shutdown)
    runner = threading.Thread(target=service.run, name="scheduler", daemon=True)
    runner.start()
    done.wait()
    runner.join(5)
    return 0
