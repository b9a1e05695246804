"""Migrations: empty → head → base → head, and models never drift from migrations."""

import uuid

from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext
from sqlalchemy import create_engine, inspect, text

from pms.config import load_settings
from pms.db import migrate
from pms.db.base import Base
from tests.conftest import create_database, drop_database


def test_upgrade_downgrade_upgrade_and_no_drift() -> None:
    name = f"pms_mig_{uuid.uuid4().hex[:8]}"
    url = create_database(name)
    try:
        settings = load_settings(database_url=url)
        migrate.upgrade(settings)
        migrate.upgrade(settings)  # idempotent
        assert migrate.current(settings) is not None
        engine = create_engine(url)
        with engine.connect() as conn:
            diff = compare_metadata(MigrationContext.configure(conn), Base.metadata)
            assert diff == [], f"models and migrations drifted: {diff}"
            houses = conn.execute(text("SELECT count(*) FROM sub_accounts WHERE is_house")).scalar()
            assert houses == 1
        migrate.downgrade(settings, "base")
        assert set(inspect(engine).get_table_names()) <= {"alembic_version"}
        migrate.upgrade(settings)
        assert "ledger_entries" in inspect(engine).get_table_names()
        engine.dispose()
    finally:
        drop_database(name)
