"""Transactions without a round trip of their own for ``BEGIN``.

psycopg2, in its default mode, sends ``BEGIN`` by itself before a transaction's first
statement and waits for the answer: one more round trip per transaction, and one more query
cycle in Postgres. The order path runs three transactions per order (the request's claim, the
intent, the stream's booking), so three of its round trips did nothing else.

Engines made by :func:`pms.db.session.make_engine` use :class:`FoldingDialect` (the psycopg2
dialect, registered as ``postgresql+pms_psycopg2``). Its connections are in psycopg2's
autocommit mode and the dialect runs the transaction itself:

- ``do_begin`` only notes that a transaction is wanted;
- the transaction's first statement goes out as ``BEGIN;<statement>``: one simple-query
  message, which Postgres runs in order (psycopg2 returns the statement's rows, the last
  result);
- ``do_commit`` / ``do_rollback`` send ``COMMIT`` / ``ROLLBACK`` when libpq reports a
  transaction open on the connection (``info.transaction_status``, read locally), and nothing
  when none was begun (a unit of work that ran no statement costs no round trip);
- :func:`execute_and_commit` sends a transaction's last statement with its ``COMMIT``.

Everything else is the psycopg2 dialect's: parameters, types, the pool's reset (a rollback
on return, which now only talks to Postgres when a transaction is actually open).
"""

from __future__ import annotations

from typing import Any

import psycopg2
import psycopg2.extensions
from sqlalchemy import Connection, CursorResult
from sqlalchemy.dialects import registry
from sqlalchemy.dialects.postgresql.psycopg2 import PGDialect_psycopg2
from sqlalchemy.exc import DBAPIError
from sqlalchemy.util.typing import TupleAny, Unpack

DRIVER_NAME = "pms_psycopg2"
_IDLE = psycopg2.extensions.TRANSACTION_STATUS_IDLE


class FoldingConnection(psycopg2.extensions.connection):  # type: ignore[misc]
    """A psycopg2 connection in autocommit mode that remembers a begun transaction."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.autocommit = True
        self.begin_pending = False


def _raw(connection: Any) -> Any:
    """The psycopg2 connection under a pool proxy (or the connection itself)."""
    return getattr(connection, "dbapi_connection", None) or connection


def _send(raw: Any, sql: str) -> None:
    cursor = raw.cursor()
    try:
        cursor.execute(sql)
    finally:
        cursor.close()


def _take_begin(cursor: Any) -> bool:
    """Whether the cursor's connection has a transaction to begin (the caller sends it now)."""
    conn = cursor.connection
    if getattr(conn, "begin_pending", False):
        conn.begin_pending = False
        return True
    return False


def _with_begin(cursor: Any, statement: str) -> str:
    return "BEGIN;" + statement if _take_begin(cursor) else statement


class FoldingDialect(PGDialect_psycopg2):
    """``PGDialect_psycopg2`` whose transactions start with their first statement."""

    supports_statement_cache = True

    def connect(self, *cargs: Any, **cparams: Any) -> Any:
        cparams.setdefault("connection_factory", FoldingConnection)
        return super().connect(*cargs, **cparams)

    def do_begin(self, dbapi_connection: Any) -> None:
        _raw(dbapi_connection).begin_pending = True

    def do_commit(self, dbapi_connection: Any) -> None:
        raw = _raw(dbapi_connection)
        raw.begin_pending = False
        if raw.info.transaction_status != _IDLE:
            # In a failed transaction Postgres answers COMMIT by rolling back, exactly as
            # psycopg2's own commit() would.
            _send(raw, "COMMIT")

    def do_rollback(self, dbapi_connection: Any) -> None:
        raw = _raw(dbapi_connection)
        raw.begin_pending = False
        if not raw.closed and raw.info.transaction_status != _IDLE:
            _send(raw, "ROLLBACK")

    def do_execute(self, cursor: Any, statement: str, parameters: Any, context: Any = None) -> None:
        cursor.execute(_with_begin(cursor, statement), parameters)

    def do_execute_no_params(self, cursor: Any, statement: str, context: Any = None) -> None:
        cursor.execute(_with_begin(cursor, statement))

    def do_executemany(
        self, cursor: Any, statement: str, parameters: Any, context: Any = None
    ) -> None:
        if _take_begin(cursor):
            cursor.execute("BEGIN")  # a batch runs statement by statement: BEGIN goes alone
        super().do_executemany(cursor, statement, parameters, context)  # type: ignore[no-untyped-call]


registry.register(f"postgresql.{DRIVER_NAME}", __name__, "FoldingDialect")


def execute_and_commit(
    connection: Connection, sql: str, params: dict[str, Any]
) -> CursorResult[Unpack[TupleAny]]:
    """Run ``sql`` (``%(name)s`` parameters, no result rows wanted: psycopg2 returns the
    COMMIT's) and commit with it, in one round trip; the transaction's own commit then has
    nothing left to send. If ``sql`` fails, nothing is committed and the caller's rollback
    ends the transaction. On an engine that does not fold (another driver), the statement runs
    and the commit is left to the caller.
    """
    if not isinstance(connection.dialect, FoldingDialect):
        return connection.exec_driver_sql(sql, params)
    result = connection.exec_driver_sql(f"{sql};COMMIT", params)
    # A statement after this one (it should not come) opens a transaction of its own rather
    # than running in autocommit mode; the caller's commit commits it.
    _raw(connection.connection).begin_pending = True
    return result


def read_outside_transaction(
    connection: Connection, sql: str, params: dict[str, Any]
) -> list[tuple[Any, ...]]:
    """The rows of one read-only statement, run on its own (autocommit): one round trip, with
    neither ``BEGIN`` nor ``COMMIT``. A single statement reads one snapshot, so this is what
    a transaction around it would have read.

    ``connection`` must not be in a transaction (it would not see the transaction's own
    writes, and its locks would not cover the read): then, as on an engine that does not
    fold, the statement runs in the connection's transaction, begun if need be.
    """
    raw = _raw(connection.connection)
    if (
        not isinstance(connection.dialect, FoldingDialect)
        or connection.in_transaction()
        or raw.begin_pending
        or raw.info.transaction_status != _IDLE
    ):
        return [tuple(row) for row in connection.exec_driver_sql(sql, params)]
    cursor = raw.cursor()
    try:
        cursor.execute(sql, params)
        return cursor.fetchall()  # type: ignore[no-any-return]
    except psycopg2.Error as exc:
        if raw.closed:
            connection.invalidate(exc)  # as SQLAlchemy does on a disconnect
        raise DBAPIError.instance(sql, params, exc, psycopg2.Error) from exc
    finally:
        cursor.close()
