"""Runs one command: idempotency by requestId, authorization, error mapping, one result.

Idempotency is durable (Postgres ``requests``): the first delivery claims the row and holds
its lock while it works, so a concurrent duplicate waits and then replays the stored result.

- same requestId, same payload, finished → the stored result is published again; no effect;
- same requestId, other payload → ``DUPLICATE_REQUEST`` (published, never stored over the
  original result);
- a delivery that finds the row unfinished (its worker died, or the first attempt ended with a
  retryable error) runs the handler again; handlers resume from what they persisted (an
  order intent is found by requestId and resolved by clientOrderId, never placed twice).

A handler answers a ``dict`` (the result's ``data``) or a :class:`Deferred`: its ``within``
statement runs in the statement that stores the result (same commit), its ``after`` step once
the result is stored and published.

The result is published while it is committed: its Redis ``MULTI`` is written just before
the ``COMMIT`` and its reply read after, so the gateway hears one round trip earlier. If the
commit then fails, the published answer stands (it is what the handler did) and the request
stays open: a retry or a redelivery resumes from what the handler persisted. An order placement uses it to answer as soon as the exchange has
accepted the order (SPEC §3.3: "fills arrive as events") and book the fills afterwards.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, TypeVar

import orjson
import structlog
from pydantic import BaseModel
from sqlalchemy import select
from sqlalchemy.exc import DBAPIError
from sqlalchemy.orm import Session, sessionmaker

from pms.clock import Clock
from pms.commands.schemas import MAX_COMMAND_BYTES, parse_command
from pms.db.folding import execute_and_commit
from pms.db.models import Request
from pms.errors import DuplicateRequest, PmsError, RetryableError, ValidationError
from pms.messaging import results
from pms.messaging.results import PendingPut, ResultStore, valid_request_id

log = structlog.get_logger(__name__)


M = TypeVar("M", bound=BaseModel)


@dataclass(frozen=True, slots=True)
class Deferred:
    """A handler's answer whose last steps run around the result.

    ``within`` is one data-modifying SQL statement and its parameters (``%(name)s`` style,
    names not starting with ``done_``); it runs as a CTE of the statement that marks the
    request DONE, so what it writes and the stored result commit together, in one round trip
    (if it fails, neither is stored and the command stays open for a retry). ``after()`` runs once the result is stored and published;
    it must leave nothing that a lost ``after`` could corrupt (an order's fills are also
    booked by the user stream and by order-sync). Its exceptions are logged, never answered.
    """

    data: dict[str, Any]
    within: tuple[str, dict[str, Any]] | None = None
    after: Callable[[], object] | None = None


Handler = Callable[[M], dict[str, Any] | Deferred]


class _OutcomeNotRecorded(Exception):
    """The completion transaction failed after the handler succeeded."""


# The claim and the completion as plain SQL (the hot path: two statements per command).
_CLAIM_SQL = (
    "INSERT INTO requests (request_id, actor, user_id, payload_hash)"
    " VALUES (%(request_id)s, %(actor)s, %(user_id)s, %(payload_hash)s)"
    " ON CONFLICT (request_id) DO NOTHING RETURNING request_id"
)
_DONE_SQL = (
    "UPDATE requests SET status = 'DONE', result = %(done_result)s::jsonb,"
    " completed_at = %(done_at)s WHERE request_id = %(done_request_id)s"
)


def payload_hash(raw: dict[str, Any]) -> str:
    return hashlib.sha256(orjson.dumps(raw, option=orjson.OPT_SORT_KEYS)).hexdigest()


class CommandRunner:
    def __init__(
        self, session_factory: sessionmaker[Session], results_store: ResultStore, clock: Clock
    ) -> None:
        self._factory = session_factory
        self._results = results_store
        self._clock = clock

    def run(
        self, actor: str, raw: Any, model: type[M], handler: Handler[M]
    ) -> dict[str, Any] | None:
        request_id = valid_request_id(raw.get("requestId")) if isinstance(raw, dict) else None
        if request_id is None:
            # Without a usable requestId there is nowhere to answer: log and drop.
            log.warning("command without a valid requestId dropped", actor=actor)
            return None
        with structlog.contextvars.bound_contextvars(requestId=request_id, actor=actor):
            try:
                size = len(orjson.dumps(raw))
                if size > MAX_COMMAND_BYTES:
                    raise ValidationError(
                        f"command is {size} bytes; the limit is {MAX_COMMAND_BYTES}"
                    )
                command = parse_command(model, raw)
            except (ValidationError, TypeError) as exc:
                error = exc if isinstance(exc, PmsError) else ValidationError(str(exc))
                return self._refuse(request_id, results.from_exception(request_id, error))
            except orjson.JSONEncodeError:
                err = ValidationError("command contains values that are not JSON")
                return self._refuse(request_id, results.from_exception(request_id, err))
            try:
                return self._run_once(actor, request_id, raw, command, handler)
            except DBAPIError as exc:
                if not exc.connection_invalidated:
                    raise
                # Postgres restarted or dropped the connection: the pool has discarded its
                # connections. Running again is what a redelivery would do (the claim was
                # rolled back; the handler resumes from what it committed).
                log.warning("database connection lost; running the command again", error=str(exc))
                return self._run_once(actor, request_id, raw, command, handler)

    def _run_once(
        self, actor: str, request_id: str, raw: dict[str, Any], command: M, handler: Handler[M]
    ) -> dict[str, Any]:
        digest = payload_hash(raw)
        session = self._factory()
        pending: PendingPut | None = None
        published = False
        try:
            with session.begin():
                # First delivery: the INSERT claims the row and holds its lock, one statement.
                # Otherwise lock the existing row (waiting for a concurrent delivery of the
                # same requestId to finish) and decide from what it stored.
                claimed = (
                    session.connection()
                    .exec_driver_sql(
                        _CLAIM_SQL,
                        {
                            "request_id": request_id,
                            "actor": actor,
                            "user_id": raw.get("userId"),
                            "payload_hash": digest,
                        },
                    )
                    .first()
                )
                if claimed is None:
                    row = session.execute(
                        select(Request).where(Request.request_id == request_id).with_for_update()
                    ).scalar_one()
                    if row.payload_hash != digest or row.actor != actor:
                        dup = DuplicateRequest(
                            f"requestId {request_id} was already used for a different command",
                            {"actor": row.actor},
                        )
                        result = results.from_exception(request_id, dup)
                        self._results.publish_only(result)
                        return result
                    if row.status == "DONE" and row.result is not None:
                        log.info("duplicate delivery answered from the stored result")
                        stored: dict[str, Any] = row.result
                        self._results.put(request_id, stored)
                        return stored
                # Not a reason to skip the handler's own resume lookup: the row inserted here
                # is not committed until the handler ends, so after a crash the redelivery
                # inserts it again while the order intent (committed on its own) exists.
                result, final, deferred = self._call(request_id, command, handler)
                if final:
                    sql, params = (
                        _DONE_SQL,
                        {
                            "done_request_id": request_id,
                            "done_result": orjson.dumps(
                                result, option=orjson.OPT_NON_STR_KEYS
                            ).decode(),
                            "done_at": self._clock.now(),
                        },
                    )
                    if deferred is not None and deferred.within is not None:
                        within_sql, within_params = deferred.within
                        sql = f"WITH within AS ({within_sql}) {sql}"
                        params |= within_params
                    # The result goes to Redis while Postgres commits it: its MULTI is sent
                    # first and its reply read after the COMMIT's (one round trip's wait, not
                    # two). Concurrent duplicates still wait for the COMMIT (the row's lock).
                    pending = self._results.send(request_id, result)
                    try:
                        # The transaction's last statement: sent with its COMMIT.
                        execute_and_commit(session.connection(), sql, params)
                    except Exception as exc:
                        raise _OutcomeNotRecorded from exc
                    finally:
                        published = pending.wait()
        except _OutcomeNotRecorded:
            # Rolled back: neither the result nor ``within`` is stored; a retry with the same
            # requestId resumes from what the handler persisted before (its intent).
            if pending is not None and pending.wait():
                # The gateway has the handler's (true) answer already: an error now would
                # contradict it. The request stays open; a retry or redelivery resumes it.
                log.exception("result published but not stored; a retry resumes the command")
                return result
            log.exception("could not store the command's result")
            internal = PmsError(
                "internal error; the command may be retried with the same requestId"
            )
            return self._answer(request_id, results.from_exception(request_id, internal))
        finally:
            session.close()
        if not (final and published):
            # Not final (nothing stored), or Redis missed the early put: through the client,
            # which reconnects and retries.
            self._results.put(request_id, result)
        # Then the deferred work.
        if deferred is not None and deferred.after is not None:
            try:
                deferred.after()
            except Exception:
                log.exception("work after the result failed; order-sync will complete it")
        return result

    def _call(
        self, request_id: str, command: M, handler: Handler[M]
    ) -> tuple[dict[str, Any], bool, Deferred | None]:
        try:
            answer = handler(command)
        except RetryableError as exc:
            # Nothing certain happened: leave the request open so a retry resumes it.
            log.warning("command ended with a retryable error", code=exc.code, error=exc.message)
            return results.from_exception(request_id, exc), False, None
        except PmsError as exc:
            log.info("command refused", code=exc.code, error=exc.message)
            return results.from_exception(request_id, exc), True, None
        except Exception:
            log.exception("command failed unexpectedly")
            internal = PmsError(
                "internal error; the command may be retried with the same requestId"
            )
            return results.from_exception(request_id, internal), False, None
        if isinstance(answer, Deferred):
            return results.ok(request_id, answer.data), True, answer
        return results.ok(request_id, answer), True, None

    def _answer(self, request_id: str, result: dict[str, Any]) -> dict[str, Any]:
        self._results.put(request_id, result)
        return result

    def _refuse(self, request_id: str, result: dict[str, Any]) -> dict[str, Any]:
        """A command refused before its requestId was looked at (malformed): stored unless the
        id already holds a result, which a malformed retry must never replace (a gateway
        reading it later would see a refusal for a deposit that went through); then it is only
        published, to the sender waiting on the channel."""
        stored, _existing = self._results.put_if_absent(request_id, result)
        if not stored:
            self._results.publish_only(result)
        return result
