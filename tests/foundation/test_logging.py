"""Log lines in both renderings, exceptions included (pms.logging)."""

from __future__ import annotations

import json
from collections.abc import Iterator

import pytest
import structlog

from pms.config import Settings
from pms.logging import configure_logging


@pytest.fixture(autouse=True)
def restore_logging() -> Iterator[None]:
    saved = structlog.get_config()
    yield
    structlog.configure(**saved)
    structlog.contextvars.clear_contextvars()


def _log_a_failure() -> None:
    log = structlog.get_logger("test")
    try:
        raise ValueError("boom")
    except ValueError:
        log.exception("handler failed", stream="user")


def test_console_logs_an_exception_with_its_traceback(
    settings: Settings, capsys: pytest.CaptureFixture[str]
) -> None:
    """`make run` logs to the console: log.exception there raised TypeError (the structured
    traceback reached the console renderer), which killed the caller, a stream's loop."""
    configure_logging(settings.model_copy(update={"log_json": False}), process="test")
    _log_a_failure()
    err = capsys.readouterr().err
    assert "handler failed" in err and "stream=user" in err
    assert "Traceback" in err and "ValueError: boom" in err


def test_json_logs_an_exception_as_data(
    settings: Settings, capsys: pytest.CaptureFixture[str]
) -> None:
    configure_logging(settings.model_copy(update={"log_json": True}), process="test")
    _log_a_failure()
    line = json.loads(capsys.readouterr().err.strip().splitlines()[-1])
    assert line["event"] == "handler failed" and line["process"] == "test"
    assert line["exception"][0]["exc_type"] == "ValueError"
