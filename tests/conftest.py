"""Shared fixtures: each test run gets its own Postgres database and Redis key prefix.

The run's settings are also exported to ``os.environ`` so subprocesses (workers, the CLI)
started by tests talk to the same database and prefix.
"""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator

import pytest
import redis
from sqlalchemy import Engine, create_engine, text
from sqlalchemy.engine import make_url
from sqlalchemy.exc import OperationalError
from sqlalchemy.orm import Session, sessionmaker

from pms.config import Settings, load_settings
from pms.db import migrate
from pms.db.session import make_engine, make_session_factory

RUN_ID = uuid.uuid4().hex[:10]
PG_ADMIN_URL = os.environ.get(
    "PMS_TEST_PG_ADMIN_URL", "postgresql+psycopg2://postgres@127.0.0.1:5432/postgres"
)
REDIS_URL = os.environ.get("PMS_TEST_REDIS_URL", "redis://127.0.0.1:6379/0")
PG_START = "pg_ctlcluster --skip-systemctl-redirect $(ls /etc/postgresql) main start"
REDIS_START = 'redis-server --daemonize yes --bind 127.0.0.1 --port 6379 --save "" --appendonly no'


def _require_postgres() -> Engine:
    engine = create_engine(PG_ADMIN_URL, isolation_level="AUTOCOMMIT")
    try:
        with engine.connect():
            pass
    except OperationalError as exc:
        pytest.exit(
            f"Postgres is not reachable at {PG_ADMIN_URL} ({exc.orig}); start it with: {PG_START}",
            3,
        )
    return engine


def _require_redis() -> None:
    try:
        redis.Redis.from_url(REDIS_URL).ping()
    except redis.RedisError as exc:
        pytest.exit(
            f"Redis is not reachable at {REDIS_URL} ({exc}); start it with: {REDIS_START}", 3
        )


def create_database(name: str) -> str:
    admin = _require_postgres()
    with admin.connect() as conn:
        conn.execute(text(f'CREATE DATABASE "{name}"'))
    admin.dispose()
    return make_url(PG_ADMIN_URL).set(database=name).render_as_string(hide_password=False)


def drop_database(name: str) -> None:
    admin = create_engine(PG_ADMIN_URL, isolation_level="AUTOCOMMIT")
    with admin.connect() as conn:
        conn.execute(
            text(
                "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = :n AND pid <> pg_backend_pid()"
            ),
            {"n": name},
        )
        conn.execute(text(f'DROP DATABASE IF EXISTS "{name}"'))
    admin.dispose()


@pytest.fixture(scope="session")
def redis_prefix() -> Iterator[str]:
    _require_redis()
    prefix = f"test-{RUN_ID}:"
    yield prefix
    client = redis.Redis.from_url(REDIS_URL)
    for pattern in (f"{prefix}*", f"dramatiq-{RUN_ID}*"):
        keys = list(client.scan_iter(match=pattern, count=1000))
        for i in range(0, len(keys), 500):
            client.delete(*keys[i : i + 500])


@pytest.fixture(scope="session")
def database_url() -> Iterator[str]:
    name = f"pms_test_{RUN_ID}"
    url = create_database(name)
    yield url
    drop_database(name)


@pytest.fixture(scope="session")
def settings(database_url: str, redis_prefix: str) -> Settings:
    env = {
        "PMS_DATABASE_URL": database_url,
        "PMS_REDIS_URL": REDIS_URL,
        "PMS_REDIS_PREFIX": redis_prefix,
        "PMS_DRAMATIQ_NAMESPACE": f"dramatiq-{RUN_ID}",
        "PMS_LOG_JSON": "true",
        # Worker fleets started by tests serve no metrics (one port for every fleet of the
        # run); tests/ops/test_worker_metrics.py turns them on with a port of its own.
        "PMS_WORKER_METRICS_PORT": "0",
    }
    os.environ.update(env)
    built = load_settings()
    migrate.upgrade(built)
    return built


@pytest.fixture(scope="session")
def engine(settings: Settings) -> Iterator[Engine]:
    eng = make_engine(settings, pool_size=10)
    yield eng
    eng.dispose()


@pytest.fixture(scope="session")
def session_factory(engine: Engine) -> sessionmaker[Session]:
    return make_session_factory(engine)


@pytest.fixture
def redis_client(settings: Settings) -> Iterator[redis.Redis]:
    client = redis.Redis.from_url(settings.redis_url)
    yield client
    client.close()
