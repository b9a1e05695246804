"""The runner's deferred answers: ``within`` commits with the stored result or not at all;
``after`` runs once the result is out, and its failure never changes the answer."""

from __future__ import annotations

import uuid
from typing import Any

from pydantic import BaseModel
from sqlalchemy import select

from pms.app import App
from pms.commands.runner import Deferred
from pms.db.models import Request
from pms.db.session import unit_of_work


class Ping(BaseModel):
    requestId: str


def _status(app: App, request_id: str) -> str | None:
    with unit_of_work(app.sessions) as s:
        row = s.execute(
            select(Request).where(Request.request_id == request_id)
        ).scalar_one_or_none()
        return None if row is None else row.status


def test_within_commits_with_the_result_and_after_runs_after_it(app: App) -> None:
    rid = uuid.uuid4().hex
    seen: dict[str, Any] = {}
    with app.db.begin() as conn:
        conn.exec_driver_sql("CREATE TABLE IF NOT EXISTS zz_within (request_id text)")

    def after() -> None:
        seen["stored"] = app.results.get(rid)
        seen["status"] = _status(app, rid)

    within = ("INSERT INTO zz_within VALUES (%(w_rid)s)", {"w_rid": rid})
    result = app.runner.run(
        "ping_deferred", {"requestId": rid}, Ping, lambda c: Deferred({"x": 1}, within, after)
    )
    assert result is not None and result["ok"] and result["data"] == {"x": 1}
    assert seen["stored"] == result and seen["status"] == "DONE"
    with app.db.begin() as conn:
        written = conn.exec_driver_sql(
            "SELECT count(*) FROM zz_within WHERE request_id = %(r)s", {"r": rid}
        ).scalar_one()
        conn.exec_driver_sql("DROP TABLE zz_within")
    assert written == 1  # by `within`, in the statement that stored the result


def test_a_failing_within_stores_nothing_and_the_command_can_be_retried(app: App) -> None:
    rid = uuid.uuid4().hex
    calls: list[str] = []
    bad = ("UPDATE no_such_table SET x = 1", {})
    result = app.runner.run(
        "ping_deferred",
        {"requestId": rid},
        Ping,
        lambda c: Deferred({"x": 1}, bad, lambda: calls.append("after")),
    )
    assert result is not None and not result["ok"]
    assert result["error"]["code"] == "INTERNAL"
    assert calls == [] and _status(app, rid) is None  # the claim was rolled back too
    again = app.runner.run("ping_deferred", {"requestId": rid}, Ping, lambda c: {"x": 2})
    assert again is not None and again["ok"] and again["data"] == {"x": 2}
    assert _status(app, rid) == "DONE"


def test_a_failing_after_does_not_change_the_answer(app: App) -> None:
    rid = uuid.uuid4().hex

    def after() -> None:
        raise RuntimeError("booking blew up")

    result = app.runner.run(
        "ping_deferred", {"requestId": rid}, Ping, lambda c: Deferred({"x": 3}, None, after)
    )
    assert result is not None and result["ok"] and result["data"] == {"x": 3}
    assert app.results.get(rid) == result and _status(app, rid) == "DONE"
