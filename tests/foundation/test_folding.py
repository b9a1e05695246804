"""Transactions whose BEGIN travels with their first statement (pms.db.folding), on real
Postgres: what goes over the wire, and that transactions keep every property they had."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from typing import Any

import psycopg2.extensions
import pytest
from sqlalchemy import Engine, text
from sqlalchemy.exc import OperationalError
from sqlalchemy.orm import Session, sessionmaker

from pms.config import Settings
from pms.db.folding import FoldingDialect, execute_and_commit
from pms.db.session import make_engine, make_session_factory, unit_of_work

_IDLE = psycopg2.extensions.TRANSACTION_STATUS_IDLE


class Wire:
    """Every query string handed to psycopg2 (before it interpolates the parameters)."""

    def __init__(self) -> None:
        self.sent: list[str] = []
        self._lock = threading.Lock()

    def record(self, query: str | bytes) -> None:
        with self._lock:
            self.sent.append(query.decode() if isinstance(query, bytes) else query)

    def clear(self) -> None:
        with self._lock:
            self.sent.clear()


def _cursor_class(wire: Wire) -> type[psycopg2.extensions.cursor]:
    class Recording(psycopg2.extensions.cursor):
        def execute(self, query: Any, vars: Any = None) -> None:
            wire.record(query)
            super().execute(query, vars)

    return Recording


@pytest.fixture(scope="module")
def wire() -> Wire:
    return Wire()


@pytest.fixture(scope="module")
def folded(settings: Settings, wire: Wire) -> Iterator[Engine]:
    engine = make_engine(
        settings, pool_size=2, connect_args={"cursor_factory": _cursor_class(wire)}
    )
    with engine.begin() as conn:
        conn.exec_driver_sql(
            "CREATE TABLE IF NOT EXISTS folding_probe (id int PRIMARY KEY, note text NOT NULL)"
        )
    yield engine
    with engine.begin() as conn:
        conn.exec_driver_sql("DROP TABLE folding_probe")
    engine.dispose()


@pytest.fixture
def sessions(folded: Engine, wire: Wire) -> Iterator[sessionmaker[Session]]:
    with folded.begin() as conn:
        conn.exec_driver_sql("DELETE FROM folding_probe")
    wire.clear()
    yield make_session_factory(folded)


def _notes(engine: Engine) -> list[str]:
    with engine.connect() as conn:
        return list(conn.exec_driver_sql("SELECT note FROM folding_probe ORDER BY id").scalars())


def test_the_engine_uses_the_folding_dialect(folded: Engine) -> None:
    assert isinstance(folded.dialect, FoldingDialect)


def test_begin_goes_with_the_first_statement_and_commit_alone(
    sessions: sessionmaker[Session], folded: Engine, wire: Wire
) -> None:
    with unit_of_work(sessions) as s:
        s.execute(text("INSERT INTO folding_probe VALUES (1, 'a')"))
        s.execute(text("INSERT INTO folding_probe VALUES (2, 'b')"))
    assert wire.sent == [
        "BEGIN;INSERT INTO folding_probe VALUES (1, 'a')",
        "INSERT INTO folding_probe VALUES (2, 'b')",
        "COMMIT",
    ]
    assert _notes(folded) == ["a", "b"]


def test_a_unit_of_work_that_runs_nothing_sends_nothing(
    sessions: sessionmaker[Session], wire: Wire
) -> None:
    with unit_of_work(sessions):
        pass
    assert wire.sent == []


def test_an_exception_rolls_back_the_statement_that_carried_begin(
    sessions: sessionmaker[Session], folded: Engine, wire: Wire
) -> None:
    with pytest.raises(RuntimeError), unit_of_work(sessions) as s:
        s.execute(text("INSERT INTO folding_probe VALUES (1, 'a')"))
        raise RuntimeError("boom")
    assert wire.sent[-1] == "ROLLBACK"
    assert _notes(folded) == []


def test_a_failing_first_statement_leaves_no_transaction_open(
    sessions: sessionmaker[Session], folded: Engine
) -> None:
    with unit_of_work(sessions) as s:
        s.execute(text("INSERT INTO folding_probe VALUES (1, 'a')"))
    with pytest.raises(Exception, match="duplicate key"), unit_of_work(sessions) as s:
        s.execute(text("INSERT INTO folding_probe VALUES (1, 'again')"))
    with folded.connect() as conn:  # the pool's next connection is clean
        raw = conn.connection.dbapi_connection
        assert raw is not None and raw.info.transaction_status == _IDLE
        assert conn.exec_driver_sql("SELECT count(*) FROM folding_probe").scalar_one() == 1


def test_a_session_closed_without_commit_is_rolled_back_on_return_to_the_pool(
    sessions: sessionmaker[Session], folded: Engine, wire: Wire
) -> None:
    session = sessions()
    session.begin()
    session.execute(text("INSERT INTO folding_probe VALUES (1, 'a')"))
    session.close()
    assert wire.sent[-1] == "ROLLBACK"
    assert _notes(folded) == []


def test_a_row_lock_is_held_until_the_transaction_ends(
    sessions: sessionmaker[Session], folded: Engine, settings: Settings
) -> None:
    """The statements after the first one run inside the transaction: a lock taken by the
    first is still held by the second, and released by the commit."""
    with unit_of_work(sessions) as s:
        s.execute(text("INSERT INTO folding_probe VALUES (1, 'a')"))
    other = make_engine(settings, pool_size=1)
    try:
        with unit_of_work(sessions) as s:
            s.execute(text("SELECT * FROM folding_probe WHERE id = 1 FOR UPDATE"))
            s.execute(text("SELECT 1"))
            with pytest.raises(OperationalError, match="could not obtain lock"):  # noqa: SIM117
                with other.begin() as conn:
                    conn.exec_driver_sql(
                        "SELECT * FROM folding_probe WHERE id = 1 FOR UPDATE NOWAIT"
                    )
        with other.begin() as conn:
            conn.exec_driver_sql("SELECT * FROM folding_probe WHERE id = 1 FOR UPDATE NOWAIT")
    finally:
        other.dispose()


def test_execute_and_commit_sends_the_last_statement_with_its_commit(
    sessions: sessionmaker[Session], folded: Engine, wire: Wire
) -> None:
    with unit_of_work(sessions) as s:
        s.execute(text("INSERT INTO folding_probe VALUES (1, 'a')"))
        execute_and_commit(
            s.connection(), "UPDATE folding_probe SET note = %(n)s WHERE id = 1", {"n": "b"}
        )
    assert wire.sent == [
        "BEGIN;INSERT INTO folding_probe VALUES (1, 'a')",
        "UPDATE folding_probe SET note = %(n)s WHERE id = 1;COMMIT",
    ]
    assert _notes(folded) == ["b"]


def test_execute_and_commit_that_fails_commits_nothing(
    sessions: sessionmaker[Session], folded: Engine
) -> None:
    with pytest.raises(Exception, match="null value"), unit_of_work(sessions) as s:
        s.execute(text("INSERT INTO folding_probe VALUES (1, 'a')"))
        execute_and_commit(
            s.connection(), "UPDATE folding_probe SET note = NULL WHERE id = %(i)s", {"i": 1}
        )
    assert _notes(folded) == []


def test_a_statement_after_execute_and_commit_gets_a_transaction_of_its_own(
    sessions: sessionmaker[Session], folded: Engine, wire: Wire
) -> None:
    with unit_of_work(sessions) as s:
        execute_and_commit(s.connection(), "INSERT INTO folding_probe VALUES (1, 'a')", {})
        s.execute(text("INSERT INTO folding_probe VALUES (2, 'b')"))
    assert wire.sent == [
        "BEGIN;INSERT INTO folding_probe VALUES (1, 'a');COMMIT",
        "BEGIN;INSERT INTO folding_probe VALUES (2, 'b')",
        "COMMIT",
    ]
    assert _notes(folded) == ["a", "b"]


def test_executemany_begins_alone_then_runs_in_the_transaction(
    sessions: sessionmaker[Session], folded: Engine, wire: Wire
) -> None:
    with pytest.raises(RuntimeError), unit_of_work(sessions) as s:
        s.execute(
            text("INSERT INTO folding_probe VALUES (:i, :n)"),
            [{"i": 1, "n": "a"}, {"i": 2, "n": "b"}],
        )
        raise RuntimeError("roll it back")
    assert wire.sent[0] == "BEGIN"
    assert _notes(folded) == []
