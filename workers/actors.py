"""One typed decorator for command actors: no Dramatiq retries (a retried order would be a
new risk decision; redelivery after a crash is the broker's job), a time limit, and an
optional age limit for periodic jobs whose moment has passed."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import dramatiq

CommandFn = Callable[[dict[str, Any]], None]
CommandActor = dramatiq.Actor[[dict[str, Any]], None]


def command_actor(
    queue: str, *, time_limit_ms: int, max_age_ms: int | None = None
) -> Callable[[CommandFn], CommandActor]:
    options: dict[str, Any] = {"max_retries": 0, "time_limit": time_limit_ms}
    if max_age_ms is not None:
        options["max_age"] = max_age_ms

    def decorate(fn: CommandFn) -> CommandActor:
        actor: CommandActor = dramatiq.actor(queue_name=queue, **options)(fn)
        return actor

    return decorate
