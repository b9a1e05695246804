"""Structured logs: one JSON event per line, with requestId / subAccountId / algoId bound.

Secrets never reach a log line: settings hold them as ``SecretStr`` and nothing formats them,
the URLs that may carry passwords are left out of the settings' repr, and a traceback carries
no frame's locals (structlog shows them by default: any frame holding the app or its settings
wrote the Redis and Postgres URLs into the log).
"""

from __future__ import annotations

import logging
import sys

import structlog
from structlog.tracebacks import ExceptionDictTransformer

from pms.config import Settings


def configure_logging(settings: Settings, *, process: str) -> None:
    level = getattr(logging, settings.log_level)
    # A traceback becomes structured data for JSON; the console renderer formats exc_info
    # itself and cannot print the structured form (it raised TypeError from log.exception).
    tail: list[structlog.typing.Processor] = (
        [
            structlog.processors.ExceptionRenderer(ExceptionDictTransformer(show_locals=False)),
            structlog.processors.JSONRenderer(),
        ]
        if settings.log_json
        else [structlog.dev.ConsoleRenderer(colors=False)]
    )
    structlog.configure(
        processors=[
            structlog.contextvars.merge_contextvars,
            structlog.processors.add_log_level,
            structlog.processors.TimeStamper(fmt="iso", utc=True),
            *tail,
        ],
        wrapper_class=structlog.make_filtering_bound_logger(level),
        logger_factory=structlog.PrintLoggerFactory(file=sys.stderr),
        cache_logger_on_first_use=True,
    )
    structlog.contextvars.bind_contextvars(process=process)
    logging.basicConfig(level=max(level, logging.WARNING), stream=sys.stderr, format="%(message)s")


def get_logger(name: str) -> structlog.stdlib.BoundLogger:
    logger: structlog.stdlib.BoundLogger = structlog.get_logger(name)
    return logger
