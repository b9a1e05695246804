"""An answer for a command that no actor serves.

Dramatiq dead-letters a message whose actor is not registered in the worker (``ActorNotFound``,
raised by the consumer thread before any actor runs): the gateway would hear nothing and wait
for its timeout. :class:`AnswerUnknownActors` answers such a command with ``VALIDATION_ERROR``
naming the actor, then leaves the message to Dramatiq (dead-letter queue, dashboard). The
answer is stored like any result unless the requestId already has one (a command of another
name under the same requestId keeps its result; the error is then only published). A message
without a usable requestId has nowhere to be answered and is only logged.
"""

from __future__ import annotations

import dramatiq
import structlog
from dramatiq.errors import ActorNotFound
from dramatiq.middleware import Middleware

from pms.errors import ValidationError
from pms.messaging import results, wire
from pms.messaging.results import ResultStore, valid_request_id

log = structlog.get_logger(__name__)


def unknown_command_error(actor_name: str) -> ValidationError:
    shown = actor_name[:64]
    if actor_name in wire.ACTOR_QUEUES:
        return ValidationError(
            f"command {shown!r} is part of the protocol but not served by this version",
            {"actor": shown},
        )
    return ValidationError(f"unknown command {shown!r}", {"actor": shown})


class AnswerUnknownActors(Middleware):
    def __init__(self, results_store: ResultStore) -> None:
        self._results = results_store

    def after_nack(self, broker: dramatiq.Broker, message: dramatiq.MessageProxy) -> None:
        if not isinstance(getattr(message, "_exception", None), ActorNotFound):
            return
        try:
            self._answer(message)
        except Exception:  # never break the consumer thread over an answer
            log.exception("unknown command not answered", actor=str(message.actor_name)[:64])

    def _answer(self, message: dramatiq.MessageProxy) -> None:
        actor_name = str(message.actor_name)
        args = message.args
        command = args[0] if isinstance(args, list | tuple) and len(args) == 1 else None
        request_id = (
            valid_request_id(command.get("requestId")) if isinstance(command, dict) else None
        )
        if request_id is None:
            log.warning("unknown command without a requestId dropped", actor=actor_name[:64])
            return
        result = results.from_exception(request_id, unknown_command_error(actor_name))
        stored, _ = self._results.put_if_absent(request_id, result)
        if not stored:
            self._results.publish_only(result)
        log.info("unknown command refused", actor=actor_name[:64], requestId=request_id)
