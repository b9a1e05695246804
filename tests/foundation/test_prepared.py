"""Server-side prepared statements: prepared on connect, the same SQL unprepared where the
PREPARE failed, and identical answers either way."""

from __future__ import annotations

import uuid

import pytest
from sqlalchemy import Engine

from pms.config import Settings
from pms.db import prepared
from pms.db.session import make_engine


def test_placeholders_must_match_the_types() -> None:
    with pytest.raises(ValueError, match="placeholders"):
        prepared.register("pms_bad", "SELECT %(a)s, %(b)s", {"a": "int"})


def test_prepare_and_execute_text() -> None:
    statement = prepared.PreparedStatement(
        "pms_x", "SELECT %(b)s + %(a)s WHERE %(a)s > 0", {"a": "int", "b": "numeric"}
    )
    assert statement.prepare_sql == "PREPARE pms_x (int, numeric) AS SELECT $2 + $1 WHERE $1 > 0"
    assert statement.execute_sql == "EXECUTE pms_x (%(a)s::int, %(b)s::numeric)"
    bare = prepared.PreparedStatement("pms_y", "SELECT 1", {})
    assert bare.prepare_sql == "PREPARE pms_y AS SELECT 1"
    assert bare.execute_sql == "EXECUTE pms_y"


def test_a_statement_whose_table_appears_later_runs_unprepared_then_prepared(
    settings: Settings, engine: Engine, monkeypatch: pytest.MonkeyPatch
) -> None:
    table = f"late_{uuid.uuid4().hex[:8]}"
    monkeypatch.setattr(prepared, "_REGISTRY", {})
    statement = prepared.register(
        "pms_test_late", f"SELECT v FROM {table} WHERE k = %(k)s", {"k": "int"}
    )
    early = make_engine(settings, pool_size=1)
    try:
        with early.connect() as conn:  # connects before the table exists: PREPARE fails
            assert "pms_test_late" not in conn.info["pms_prepared"]
        with engine.begin() as conn:
            conn.exec_driver_sql(f"CREATE TABLE {table} (k int, v numeric)")
            conn.exec_driver_sql(f"INSERT INTO {table} VALUES (1, 2.50)")
        # ``before`` runs first in the same message; only the statement's rows come back.
        before = f"UPDATE {table} SET v = v + 1 WHERE k = %(k)s;"
        with early.connect() as conn:
            assert str(statement.execute(conn, {"k": 1}).scalar_one()) == "2.50"
            assert str(statement.execute(conn, {"k": 1}, before=before).scalar_one()) == "3.50"
            conn.rollback()
        late = make_engine(settings, pool_size=1)
        try:
            with late.connect() as conn:
                assert "pms_test_late" in conn.info["pms_prepared"]
                names = conn.exec_driver_sql("SELECT name FROM pg_prepared_statements").scalars()
                assert "pms_test_late" in set(names)
                assert str(statement.execute(conn, {"k": 1}).scalar_one()) == "2.50"
                result = statement.execute(conn, {"k": 1}, before=before)
                assert str(result.scalar_one()) == "3.50"
                conn.rollback()
        finally:
            late.dispose()
    finally:
        early.dispose()
        with engine.begin() as conn:
            conn.exec_driver_sql(f"DROP TABLE IF EXISTS {table}")


def test_prepared_statements_are_planned_once_and_before_takes_statements_too(
    settings: Settings, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A statement whose generic plan Postgres estimates dearer than its custom ones (an array
    parameter) would be re-planned on every run; the engine's connections plan it once. A
    prepared statement in ``before`` runs as its EXECUTE in the same message."""
    monkeypatch.setattr(prepared, "_REGISTRY", {})
    lock = prepared.register(
        "pms_test_lock", "SELECT 1 FROM pg_class WHERE oid = ANY(%(ids)s)", {"ids": "oid[]"}
    )
    statement = prepared.register(
        "pms_test_array",
        "SELECT count(*) FROM pg_class WHERE oid = ANY(%(ids)s)",
        {"ids": "oid[]"},
    )
    engine = make_engine(settings, pool_size=1)
    try:
        with engine.connect() as conn:
            assert conn.exec_driver_sql("SHOW plan_cache_mode").scalar() == "force_generic_plan"
            for _ in range(8):
                count = statement.execute(conn, {"ids": [1259, 1247]}, before=[lock]).scalar()
                assert count == 2
            plans = conn.exec_driver_sql(
                "SELECT name, generic_plans, custom_plans FROM pg_prepared_statements"
                " WHERE name IN ('pms_test_array', 'pms_test_lock') ORDER BY name"
            ).all()
            assert [tuple(p) for p in plans] == [
                ("pms_test_array", 8, 0),
                ("pms_test_lock", 8, 0),
            ]
            conn.rollback()
    finally:
        engine.dispose()
