"""The per-process engine graph for actors, built on first use (not at import: building it
talks to the exchange and the database)."""

from __future__ import annotations

import threading

from pms.app import App, build_app
from workers.broker import clock, settings

_app: App | None = None
_lock = threading.Lock()


def app() -> App:
    global _app
    if _app is None:
        with _lock:
            if _app is None:
                _app = build_app(settings, clock=clock, db_pool=20)
    return _app
