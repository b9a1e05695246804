"""The engine's connection liveness: idle connections are checked before use, hot ones are
not, and a dead connection costs at most one failed statement per process."""

from __future__ import annotations

import time

import pytest
from sqlalchemy import Engine, text
from sqlalchemy.exc import DBAPIError

from pms.config import Settings
from pms.db import session as db_session
from pms.db.session import make_engine


def _backend_pid(engine: Engine) -> int:
    with engine.connect() as conn:
        pid = conn.exec_driver_sql("SELECT pg_backend_pid()").scalar_one()
    assert isinstance(pid, int)
    return pid


def _terminate(admin: Engine, pid: int) -> None:
    with admin.connect() as conn:
        assert conn.execute(text("SELECT pg_terminate_backend(:p)"), {"p": pid}).scalar_one()
    time.sleep(0.05)  # the backend exits asynchronously


def test_pool_hands_out_the_most_recently_used_connection(settings: Settings) -> None:
    engine = make_engine(settings, pool_size=2)
    try:
        first, second = engine.connect(), engine.connect()
        pid_first = first.exec_driver_sql("SELECT pg_backend_pid()").scalar_one()
        pid_second = second.exec_driver_sql("SELECT pg_backend_pid()").scalar_one()
        first.close()
        second.close()  # returned last: handed out next (a FIFO pool would hand out `first`)
        assert _backend_pid(engine) == pid_second != pid_first
    finally:
        engine.dispose()


def test_idle_connection_killed_is_replaced_before_use(
    settings: Settings, engine: Engine, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(db_session, "IDLE_PING_S", 0.0)  # every checkout counts as idle
    pms_engine = make_engine(settings, pool_size=2)
    try:
        pid = _backend_pid(pms_engine)
        _terminate(engine, pid)
        assert _backend_pid(pms_engine) != pid  # no error: the ping found it dead
    finally:
        pms_engine.dispose()


def test_hot_connection_killed_fails_once_then_the_pool_reconnects(
    settings: Settings, engine: Engine, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(db_session, "IDLE_PING_S", 3600.0)  # never pinged
    pms_engine = make_engine(settings, pool_size=2)
    try:
        pid = _backend_pid(pms_engine)
        _terminate(engine, pid)
        with pytest.raises(DBAPIError) as raised:
            _backend_pid(pms_engine)
        assert raised.value.connection_invalidated
        assert _backend_pid(pms_engine) != pid
    finally:
        pms_engine.dispose()
