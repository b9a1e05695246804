"""Engines, sessions and the unit of work.

The transaction belongs to the unit of work (one command, one fill), never to a repository
function: repositories flush, they do not commit.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

from sqlalchemy import Engine, create_engine
from sqlalchemy.exc import OperationalError
from sqlalchemy.orm import Session, sessionmaker

from pms.config import Settings
from pms.errors import ConfigError


def make_engine(settings: Settings, *, pool_size: int = 5) -> Engine:
    return create_engine(
        settings.database_url,
        pool_size=pool_size,
        max_overflow=pool_size,
        pool_pre_ping=True,
        future=True,
    )


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
