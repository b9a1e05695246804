"""Structured logs: one JSON event per line, with requestId / subAccountId / algoId bound.

Secrets never reach a log line: settings hold them as ``SecretStr`` and nothing formats them.
"""

from __future__ import annotations

import logging
import sys

import structlog

from pms.config import Settings


def configure_logging(settings: Settings, *, process: str) -> None:
    level = getattr(logging, settings.log_level)
    # A traceback becomes structured data for JSON; the console renderer formats exc_info
    # itself and cannot print the structured form (it raised TypeError from log.exception).
    tail: list[structlog.typing.Processor] = (
        [structlog.processors.dict_tracebacks, structlog.processors.JSONRenderer()]
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
