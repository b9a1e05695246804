"""Server-side prepared statements for the order path's heaviest queries.

psycopg2 interpolates parameters on the client, so Postgres plans every statement again; for
the risk-context query (five sub-selects) planning costs more than executing. A statement
registered here is ``PREPARE``d on every new connection of an engine made by
``make_engine`` and run as ``EXECUTE name(...)``. A connection where the ``PREPARE`` failed
(e.g. the schema was not migrated yet when it connected) runs the same SQL unprepared.

Those connections plan prepared statements once (``plan_cache_mode = force_generic_plan``).
Left to itself, Postgres keeps re-planning a statement whose generic plan it estimates dearer
than the custom ones, which it did for every statement of the booking's take and the risk
reload (an array parameter's size is unknown to a generic plan): planning cost more than
running them. A generic plan must therefore be as good as a custom one for every statement
registered here; ``tests/perf_guards/test_plans.py`` runs each, both ways, against an account
with a long history. Statements that are not prepared (everything else) are not affected.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import structlog
from sqlalchemy import Connection, CursorResult
from sqlalchemy.util.typing import TupleAny, Unpack

from pms.db import folding

log = structlog.get_logger(__name__)

_INFO_KEY = "pms_prepared"
_PARAM = re.compile(r"%\((\w+)\)s")


@dataclass(frozen=True, slots=True)
class PreparedStatement:
    """``sql`` uses ``%(name)s`` placeholders; ``types`` gives each name's Postgres type."""

    name: str
    sql: str
    types: dict[str, str]

    @property
    def prepare_sql(self) -> str:
        order = list(self.types)
        body = _PARAM.sub(lambda m: f"${order.index(m.group(1)) + 1}", self.sql)
        if not self.types:
            return f"PREPARE {self.name} AS {body}"
        return f"PREPARE {self.name} ({', '.join(self.types.values())}) AS {body}"

    @property
    def execute_sql(self) -> str:
        if not self.types:  # ``EXECUTE name ()`` is a syntax error
            return f"EXECUTE {self.name}"
        args = ", ".join(f"%({n})s::{t}" for n, t in self.types.items())
        return f"EXECUTE {self.name} ({args})"

    def sql_on(self, connection: Connection) -> str:
        """What runs the statement on ``connection``: its ``EXECUTE`` where it was prepared,
        else its SQL."""
        if self.name in connection.info.get(_INFO_KEY, ()):
            return self.execute_sql
        return self.sql

    def execute(
        self,
        connection: Connection,
        params: dict[str, Any],
        *,
        before: str | Sequence[PreparedStatement] = "",
    ) -> CursorResult[Unpack[TupleAny]]:
        """Run the statement; ``before`` (SQL whose statements end in ``;``, or prepared
        statements, same parameters) goes first in the same message, and only the statement's
        own rows come back."""
        if not isinstance(before, str):
            before = "".join(f"{s.sql_on(connection)};" for s in before)
        return connection.exec_driver_sql(before + self.sql_on(connection), params)

    def rows_outside_transaction(
        self, connection: Connection, params: dict[str, Any]
    ) -> list[tuple[Any, ...]]:
        """The statement's rows in one round trip, with no transaction around it
        (:func:`pms.db.folding.read_outside_transaction`)."""
        return folding.read_outside_transaction(connection, self.sql_on(connection), params)


_REGISTRY: dict[str, PreparedStatement] = {}


def register(name: str, sql: str, types: dict[str, str]) -> PreparedStatement:
    names = set(_PARAM.findall(sql))
    if names != set(types):
        raise ValueError(f"{name}: placeholders {sorted(names)} vs types {sorted(types)}")
    statement = PreparedStatement(name, sql, dict(types))
    _REGISTRY[name] = statement
    return statement


def prepare_on_connect(dbapi_connection: Any, record: Any) -> None:
    """Engine ``connect`` listener: PREPARE every registered statement on the new connection."""
    prepared: set[str] = set()
    autocommit = dbapi_connection.autocommit
    dbapi_connection.autocommit = True
    try:
        cursor = dbapi_connection.cursor()
        try:
            cursor.execute("SET plan_cache_mode = force_generic_plan")
            for statement in _REGISTRY.values():
                try:
                    cursor.execute(statement.prepare_sql)
                    prepared.add(statement.name)
                except Exception as exc:  # a missing table before migrations, typically
                    log.debug("statement not prepared", statement=statement.name, error=str(exc))
        finally:
            cursor.close()
    finally:
        dbapi_connection.autocommit = autocommit
    record.info[_INFO_KEY] = prepared
