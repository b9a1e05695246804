"""Run Alembic migrations programmatically (``pms db upgrade``), creating the database first."""

from __future__ import annotations

from pathlib import Path

from alembic import command
from alembic.config import Config
from sqlalchemy import create_engine, text
from sqlalchemy.engine import make_url
from sqlalchemy.exc import OperationalError

from pms.config import Settings
from pms.errors import ConfigError

MIGRATIONS = Path(__file__).with_name("migrations")


def alembic_config(database_url: str) -> Config:
    cfg = Config()
    cfg.set_main_option("script_location", str(MIGRATIONS))
    cfg.set_main_option("sqlalchemy.url", database_url.replace("%", "%%"))
    return cfg


def ensure_database(database_url: str) -> bool:
    """Create the target database if it does not exist. Returns True when it was created."""
    url = make_url(database_url)
    name = url.database
    if not name:
        raise ConfigError("PMS_DATABASE_URL: names no database")
    admin = create_engine(url.set(database="postgres"), isolation_level="AUTOCOMMIT")
    try:
        with admin.connect() as conn:
            exists = conn.execute(
                text("SELECT 1 FROM pg_database WHERE datname = :n"), {"n": name}
            ).scalar()
            if exists:
                return False
            quoted = '"' + name.replace('"', '""') + '"'
            conn.execute(text(f"CREATE DATABASE {quoted}"))
            return True
    except OperationalError as exc:
        raise ConfigError(
            f"cannot reach Postgres at {url.render_as_string(hide_password=True)}: start it with"
            " `pg_ctlcluster --skip-systemctl-redirect $(ls /etc/postgresql) main start`"
            " or set PMS_DATABASE_URL"
        ) from exc
    finally:
        admin.dispose()


def upgrade(settings: Settings, revision: str = "head") -> None:
    ensure_database(settings.database_url)
    command.upgrade(alembic_config(settings.database_url), revision)


def downgrade(settings: Settings, revision: str = "base") -> None:
    command.downgrade(alembic_config(settings.database_url), revision)


def current(settings: Settings) -> str | None:
    from alembic.runtime.migration import MigrationContext

    engine = create_engine(settings.database_url)
    try:
        with engine.connect() as conn:
            return MigrationContext.configure(conn).get_current_revision()
    finally:
        engine.dispose()
