"""The per-process engine graph for actors: built once per worker process, not at import
(importing must not talk to the exchange or the database), but warmed as soon as the worker
process has booted, so the first command (perhaps a liquidation) does not pay for it."""

from __future__ import annotations

import threading
from typing import Any

import dramatiq
import structlog
from dramatiq.middleware import Middleware

from pms.app import App, build_app
from pms.errors import PmsError
from workers.broker import broker, clock, settings

log = structlog.get_logger(__name__)
_app: App | None = None
_lock = threading.Lock()


def app() -> App:
    global _app
    if _app is None:
        with _lock:
            if _app is None:
                _app = build_app(settings, clock=clock, db_pool=20)
    return _app


def _warm() -> None:
    try:
        app().instruments.all()  # the exchange's filters and brackets, loaded once
    except (PmsError, OSError) as exc:
        # Not fatal: the first command loads them (and reports the error if it persists).
        log.warning("worker warm-up could not reach the exchange", error=str(exc))


class WarmUp(Middleware):
    def after_worker_boot(self, broker: dramatiq.Broker, worker: Any) -> None:
        threading.Thread(target=_warm, name="warm-up", daemon=True).start()


broker.add_middleware(WarmUp())
