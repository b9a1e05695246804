"""Injected faults: the next N requests matching a path misbehave in a chosen way.

Admin body: ``{"kind":"503_unknown","count":1,"path":"/fapi/v1/order"}``. Kinds:

* ``429`` / ``418``: ``{"code":-1003,...}`` with ``Retry-After`` (seconds);
* ``503_unknown``: the request IS processed (an order is placed), then answered 503 with
  ``{"code":-1000,"msg":"Unknown error, please check your request or try again later."}``;
* ``timeout``: the request is processed, then held without an answer for ``holdMs``;
* ``1021``: ``{"code":-1021,...}`` without processing.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass


class FaultKind(enum.StrEnum):
    RATE_LIMIT = "429"
    BANNED = "418"
    UNKNOWN_503 = "503_unknown"
    TIMEOUT = "timeout"
    TIMESTAMP = "1021"


@dataclass(slots=True)
class Fault:
    kind: FaultKind
    count: int
    path: str | None
    method: str | None = None
    retry_after: int = 1
    hold_ms: int = 30_000

    def matches(self, method: str, path: str) -> bool:
        if self.path is not None and self.path != path:
            return False
        return self.method is None or self.method == method

    def payload(self) -> dict[str, object]:
        return {
            "kind": str(self.kind),
            "count": self.count,
            "path": self.path,
            "method": self.method,
            "retryAfter": self.retry_after,
            "holdMs": self.hold_ms,
        }


class FaultBook:
    def __init__(self) -> None:
        self.faults: list[Fault] = []

    def add(self, fault: Fault) -> None:
        if fault.count > 0:
            self.faults.append(fault)

    def take(self, method: str, path: str) -> Fault | None:
        """The first armed fault matching this request, counting it down."""
        for fault in self.faults:
            if fault.matches(method, path):
                fault.count -= 1
                if fault.count <= 0:
                    self.faults.remove(fault)
                return fault
        return None

    def clear(self) -> None:
        self.faults.clear()

    def payload(self) -> list[dict[str, object]]:
        return [f.payload() for f in self.faults]
