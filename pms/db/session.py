"""Engines, sessions and the unit of work.

The transaction belongs to the unit of work (one command, one fill), never to a repository
function: repositories flush, they do not commit.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from sqlalchemy import Engine, create_engine, event
from sqlalchemy.engine import URL, make_url
from sqlalchemy.exc import DisconnectionError, OperationalError
from sqlalchemy.orm import Session, sessionmaker

from pms.config import Settings
from pms.db import folding, prepared
from pms.errors import ConfigError

# A pooled connection idle for longer than this is checked (``SELECT 1``) before it is
# handed out; one used more recently is handed out as is.
IDLE_PING_S = 1.0


def make_engine(
    settings: Settings, *, pool_size: int = 5, connect_args: dict[str, Any] | None = None
) -> Engine:
    """The engine, with a liveness check only for connections that sat idle.

    SQLAlchemy's ``pool_pre_ping`` costs a round trip on every checkout (three per order). Here
    the pool is LIFO (hot connections are reused, idle ones stay idle) and only a connection
    idle for more than :data:`IDLE_PING_S` is pinged; a dead one is replaced before use. If
    Postgres restarts while connections are hot, the first statement on one of them fails as
    a disconnect, which makes SQLAlchemy invalidate every connection of the pool: that one
    command answers a retryable error and the next ones reconnect.

    A psycopg2 URL gets :class:`pms.db.folding.FoldingDialect`: each transaction's ``BEGIN``
    travels with its first statement.
    """
    engine = create_engine(
        folding_url(settings.database_url),
        connect_args=connect_args or {},
        pool_size=pool_size,
        max_overflow=pool_size,
        pool_use_lifo=True,
        future=True,
    )
    event.listen(engine, "connect", prepared.prepare_on_connect)
    event.listen(engine, "checkin", _mark_checkin)
    event.listen(engine, "checkout", _ping_if_idle)
    return engine


def folding_url(database_url: str) -> URL:
    """``postgresql+psycopg2://`` (what settings normalize a Postgres URL to) → the folding
    psycopg2 dialect; any other URL is left as it is."""
    url = make_url(database_url)
    if url.drivername == "postgresql+psycopg2":
        url = url.set(drivername=f"postgresql+{folding.DRIVER_NAME}")
    return url


def _mark_checkin(dbapi_connection: Any, record: Any) -> None:
    if record is not None:
        record.info["pms_checked_in"] = time.monotonic()


def _ping_if_idle(dbapi_connection: Any, record: Any, proxy: Any) -> None:
    last = record.info.get("pms_checked_in")
    if last is not None and time.monotonic() - last < IDLE_PING_S:
        return
    autocommit = dbapi_connection.autocommit
    try:
        dbapi_connection.autocommit = True
        cursor = dbapi_connection.cursor()
        try:
            cursor.execute("SELECT 1")
        finally:
            cursor.close()
        dbapi_connection.autocommit = autocommit
    except Exception as exc:
        # The pool discards this connection and checks out (or opens) another one.
        raise DisconnectionError(str(exc)) from exc


def make_session_factory(engine: Engine) -> sessionmaker[Session]:
    return sessionmaker(engine, expire_on_commit=False, autoflush=True)


@contextmanager
def unit_of_work(factory: sessionmaker[Session]) -> Iterator[Session]:
    """One transaction: commit when the block ends normally, roll back on any exception."""
    session = factory()
    try:
        with session.begin():
            yield session
    finally:
        session.close()


def check_database(engine: Engine) -> None:
    """Fail with a message naming the command to start Postgres when it is not reachable."""
    try:
        with engine.connect():
            pass
    except OperationalError as exc:
        if "does not exist" in str(exc.orig):
            raise ConfigError(
                f"database {engine.url.database!r} does not exist: run `pms db upgrade` first"
            ) from exc
        raise ConfigError(
            f"cannot reach Postgres at {engine.url.render_as_string(hide_password=True)}: start it"
            " with `pg_ctlcluster --skip-systemctl-redirect $(ls /etc/postgresql) main start`"
            " or set PMS_DATABASE_URL"
        ) from exc
