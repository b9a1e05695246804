"""Lists as one Postgres array parameter, so a statement renders once.

SQLAlchemy renders ``column.in_(values)`` and ``bindparam(name, expanding=True)`` as an IN
list whose text depends on the list's length: the statement is re-rendered on every
execution (≈ 75 µs of CPU per query here, a fifth of a small query's cost).
``column == any_(bigint_array("ids"))`` renders once, as ``column = ANY(%(ids)s::BIGINT[])``,
and psycopg2 sends the Python list as an array literal.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from sqlalchemy import BigInteger, String, any_
from sqlalchemy.dialects.postgresql import ARRAY, array
from sqlalchemy.sql.elements import BindParameter, ColumnElement


def bigint_array(name: str) -> BindParameter[Any]:
    """A bind parameter taking a list of integers (ids)."""
    return BindParameter(name, type_=ARRAY(BigInteger))


def text_array(name: str) -> BindParameter[Any]:
    """A bind parameter taking a list of strings."""
    return BindParameter(name, type_=ARRAY(String))


def any_of(values: Sequence[str]) -> ColumnElement[Any]:
    """``= ANY(ARRAY[...])`` of constants fixed when the statement is built (e.g. the open
    order statuses): one bind per element, the same text on every execution."""
    return any_(array(list(values)))
