"""The runner's deferred answers: ``within`` commits with the stored result or not at all;
``after`` runs once the result is out, and its failure never changes the answer. The result
is published while it is committed; a failed commit leaves the published answer standing and
the request open."""

from __future__ import annotations

import threading
import uuid
from collections.abc import Iterator
from typing import Any

import orjson
import pytest
import redis
from pydantic import BaseModel
from sqlalchemy import select

from pms.app import App
from pms.commands.runner import Deferred
from pms.db.models import Request
from pms.db.session import unit_of_work
from pms.messaging import results as results_module


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


@pytest.fixture
def scratch(app: App) -> Iterator[str]:
    """A table for ``within`` statements to write."""
    with app.db.begin() as conn:
        conn.exec_driver_sql("CREATE TABLE IF NOT EXISTS zz_within (request_id text)")
    yield "zz_within"
    with app.db.begin() as conn:
        conn.exec_driver_sql("DROP TABLE zz_within")


def test_a_failing_commit_stores_nothing_and_the_published_answer_stands(app: App) -> None:
    rid = uuid.uuid4().hex
    calls: list[str] = []
    bad = ("UPDATE no_such_table SET x = 1", {})
    result = app.runner.run(
        "ping_deferred",
        {"requestId": rid},
        Ping,
        lambda c: Deferred({"x": 1}, bad, lambda: calls.append("after")),
    )
    # The answer went to Redis with the COMMIT: it is what the handler did, so it stands.
    assert result is not None and result["ok"] and result["data"] == {"x": 1}
    assert app.results.get(rid) == result
    assert calls == [] and _status(app, rid) is None  # the claim was rolled back too
    # The request is open: a retry runs the handler again (which resumes from what it
    # persisted), answers and stores.
    again = app.runner.run("ping_deferred", {"requestId": rid}, Ping, lambda c: {"x": 2})
    assert again is not None and again["ok"] and again["data"] == {"x": 2}
    assert _status(app, rid) == "DONE" and app.results.get(rid) == again


def _refuse_sends(monkeypatch: pytest.MonkeyPatch) -> None:
    def refused(*args: Any, **kwargs: Any) -> Any:
        raise redis.ConnectionError("connection refused (test)")

    monkeypatch.setattr(results_module.resp, "InFlight", refused)


def test_a_failing_commit_without_a_published_answer_answers_internal(
    app: App, monkeypatch: pytest.MonkeyPatch
) -> None:
    rid = uuid.uuid4().hex
    _refuse_sends(monkeypatch)
    bad = ("UPDATE no_such_table SET x = 1", {})
    result = app.runner.run(
        "ping_deferred", {"requestId": rid}, Ping, lambda c: Deferred({"x": 1}, bad)
    )
    assert result is not None and not result["ok"]
    assert result["error"]["code"] == "INTERNAL"
    assert app.results.get(rid) == result and _status(app, rid) is None


def test_a_missed_early_put_is_made_through_the_client_after_the_commit(
    app: App, monkeypatch: pytest.MonkeyPatch
) -> None:
    rid = uuid.uuid4().hex
    _refuse_sends(monkeypatch)
    result = app.runner.run("ping_deferred", {"requestId": rid}, Ping, lambda c: {"x": 4})
    assert result is not None and result["ok"]
    assert app.results.get(rid) == result and _status(app, rid) == "DONE"


def test_the_result_is_published_before_its_commit_completes(app: App, scratch: str) -> None:
    # Arrange: the result's statement will wait on a lock this test holds; a subscriber.
    rid = uuid.uuid4().hex
    sub = app.redis.pubsub(ignore_subscribe_messages=True)
    sub.subscribe(app.results.channel)
    sub.get_message(timeout=1)
    holder = app.db.connect()
    holder.exec_driver_sql(f"LOCK TABLE {scratch} IN EXCLUSIVE MODE")
    within = (f"INSERT INTO {scratch} VALUES (%(w_rid)s)", {"w_rid": rid})
    answers: list[dict[str, Any] | None] = []
    runner = threading.Thread(
        target=lambda: answers.append(
            app.runner.run(
                "ping_deferred", {"requestId": rid}, Ping, lambda c: Deferred({"x": 5}, within)
            )
        )
    )
    try:
        # Act: the command runs up to its blocked COMMIT.
        runner.start()
        message = None
        for _ in range(50):
            message = sub.get_message(timeout=0.2)
            if message is not None:
                break

        # Assert: the gateway has the answer while the request is not committed yet.
        assert message is not None, "the result was not published before the commit"
        assert orjson.loads(message["data"])["data"] == {"x": 5}
        assert _status(app, rid) is None and runner.is_alive()
    finally:
        holder.rollback()
        holder.close()
        runner.join(10)
        sub.close()
    assert answers and answers[0] is not None and answers[0]["data"] == {"x": 5}
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
