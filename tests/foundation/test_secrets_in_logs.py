"""Secrets are never logged (SPEC §2, pms/logging.py). JSON logs used to render a traceback
with ``structlog.processors.dict_tracebacks``, whose ``ExceptionDictTransformer`` shows every
frame's locals by default (repr, first 80 characters); ``Settings`` kept the Redis and
Postgres URLs in its repr and ``App``'s repr starts with its settings: every
``log.exception`` below a frame holding ``app`` or ``settings`` (order-sync, funding
settlement, the runner...) wrote the Redis password."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).parents[2]

SCRIPT = r"""
import redis
from pms.app import build_app
from pms.config import load_settings
from pms.logging import configure_logging
from pms.sync.orders import OrderSyncReport, _find_unknown

class MalformedExchange:
    def fetch_open_orders(self, symbol=None):
        raise ValueError("malformed answer")
    def close(self):
        pass

settings = load_settings(
    redis_url="redis://:hunter2pw@127.0.0.1:6379/0",
    database_url="postgresql://pms:dbsecretpw@127.0.0.1:5432/pms",
    log_json=True,
)
configure_logging(settings, process="audit")
app = build_app(settings, exchange=MalformedExchange(), client=redis.Redis())
_find_unknown(app, OrderSyncReport(), set(), None)
"""


def test_an_exception_log_does_not_carry_the_redis_password() -> None:
    done = subprocess.run(
        [sys.executable, "-c", SCRIPT],
        capture_output=True,
        text=True,
        timeout=60,
        cwd=ROOT,
        env={k: v for k, v in os.environ.items() if not k.startswith("PMS_")},
    )
    assert "order-sync could not read" in done.stderr, done.stderr[-800:]
    assert '"exc_type": "ValueError"' in done.stderr  # the traceback is still there
    assert "hunter2pw" not in done.stderr, [
        line[line.find("hunter2pw") - 120 : line.find("hunter2pw") + 20]
        for line in done.stderr.splitlines()
        if "hunter2pw" in line
    ]


def test_the_settings_repr_leaves_the_urls_out() -> None:
    from pms.config import load_settings

    settings = load_settings(
        redis_url="redis://:hunter2pw@127.0.0.1:6379/0",
        database_url="postgresql://pms:dbsecretpw@127.0.0.1:5432/pms",
    )
    text = repr(settings)
    assert "hunter2pw" not in text and "dbsecretpw" not in text
    assert "redis_prefix" in text  # the rest is still there
