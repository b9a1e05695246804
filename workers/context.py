"""The per-process engine graph for actors: built once per worker process, not at import
(importing must not talk to the exchange or the database), but warmed as soon as the worker
process has booted, so the first command (perhaps a liquidation) does not pay for it
(:mod:`pms.warmup`)."""

from __future__ import annotations

import threading
from typing import Any

import dramatiq
import structlog
from dramatiq.middleware import Middleware
from sqlalchemy.exc import DBAPIError

from pms import warmup
from pms.app import App, build_app
from pms.errors import PmsError
from workers.broker import broker, clock, settings

log = structlog.get_logger(__name__)
DB_POOL = 20
_app: App | None = None
_lock = threading.Lock()


def app() -> App:
    global _app
    if _app is None:
        with _lock:
            if _app is None:
                _app = build_app(settings, clock=clock, db_pool=DB_POOL)
    return _app


def _warm(threads: int) -> None:
    from workers.risk import enforcer

    # Instruments; one open connection per worker thread and the hot paths' statements
    # (reads for ids that match nothing, rolled back); a liquidation's enforcement for a
    # sub-account that does not exist (it takes and releases its advisory lock, finds no
    # pending event and no book, and writes nothing). Each step on its own: not fatal, the
    # first command pays for what was not warmed (and reports an error if it persists).
    steps = (
        ("instruments", lambda: app().instruments.all()),
        ("database", lambda: warmup.warm_database(app(), connections=min(threads, DB_POOL))),
        ("risk enforcement", lambda: enforcer().enforce(warmup.NO_SUCH_ID, "warm-up")),
    )
    for name, step in steps:
        try:
            step()
        except (PmsError, OSError, DBAPIError) as exc:
            log.warning("worker warm-up step failed", step=name, error=str(exc))


class WarmUp(Middleware):
    def after_worker_boot(self, broker: dramatiq.Broker, worker: Any) -> None:
        threads = int(getattr(worker, "worker_threads", 8))
        threading.Thread(target=_warm, args=(threads,), name="warm-up", daemon=True).start()


broker.add_middleware(WarmUp())
