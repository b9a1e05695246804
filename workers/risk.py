"""``pms.risk`` actors: tier enforcement (margin call, restriction, ADL, liquidation).

Its own queue so liquidations never wait behind trading traffic; run a dedicated process
with ``pms worker --queues pms.risk``. Enforcement is state-based and idempotent, so a
redelivered or duplicated message is harmless.
"""

from __future__ import annotations

from typing import Any

import structlog

from pms.riskengine.enforce import RiskEnforcer
from workers.actors import command_actor
from workers.context import app

log = structlog.get_logger(__name__)
RISK = command_actor("pms.risk", time_limit_ms=120_000)
_enforcer: RiskEnforcer | None = None


def enforcer() -> RiskEnforcer:
    global _enforcer
    if _enforcer is None:
        _enforcer = RiskEnforcer(app())
    return _enforcer


@RISK
def enforce_risk(command: dict[str, Any]) -> None:
    sub_account_id = command.get("subAccountId")
    if not isinstance(sub_account_id, int) or isinstance(sub_account_id, bool):
        log.warning("enforce_risk without a sub-account id", command=command)
        return
    with structlog.contextvars.bound_contextvars(requestId=command.get("requestId")):
        enforcer().enforce(sub_account_id, str(command.get("reason", "")))
