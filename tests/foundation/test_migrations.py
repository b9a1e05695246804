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


def test_0003_rebuilds_an_index_an_interrupted_run_left_invalid() -> None:
    name = f"pms_mig_{uuid.uuid4().hex[:8]}"
    url = create_database(name)
    engine = create_engine(url)
    try:
        settings = load_settings(database_url=url)
        migrate.upgrade(settings, "0002")
        with engine.begin() as conn:  # what an interrupted CREATE INDEX CONCURRENTLY leaves
            conn.execute(
                text("CREATE INDEX ix_orders_sub_account_created ON orders (sub_account_id)")
            )
            conn.execute(
                text(
                    "UPDATE pg_index SET indisvalid = false"
                    " WHERE indexrelid = 'ix_orders_sub_account_created'::regclass"
                )
            )
        migrate.upgrade(settings)
        with engine.connect() as conn:
            rows = conn.execute(
                text(
                    "SELECT c.relname, i.indisvalid, pg_get_indexdef(i.indexrelid)"
                    " FROM pg_index i JOIN pg_class c ON c.oid = i.indexrelid"
                    " WHERE c.relname LIKE 'ix_orders_sub_account%' ORDER BY 1"
                )
            ).all()
        assert [(r[0], r[1]) for r in rows] == [("ix_orders_sub_account_created", True)]
        assert "(sub_account_id, created_at)" in rows[0][2]
    finally:
        engine.dispose()
        drop_database(name)
