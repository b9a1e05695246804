"""The orders of one risk action (ADL cut, liquidation close), placed leg by leg.

A planned order (``{"symbol", "side", "qty"}`` from the event's details) becomes one or more
reduce-only market *legs*: a quantity above the instrument's market maximum
(``MARKET_LOT_SIZE.maxQty``; BTCUSDT: 120) would be refused whole, so it is split into legs
of at most that size on the market step. Each leg's request id derives from the event id,
the symbol and the leg's index, and the split depends only on the planned quantity, so a
resumed action asks for the same legs again and the order service continues each one by
request id instead of placing it twice. Leg 0 keeps the id an unsplit order always had
(``risk:{eventId}:{symbol}``).

Every leg is placed on its own: one that fails does not stop the others (a liquidation
closes what it can). The failures come back with the outcome; the caller decides what they
mean for the event (a terminal one fails it, a retryable one leaves it to be resumed).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from decimal import Decimal
from typing import Any

import structlog

from pms.commands.schemas import ENGINE_REQUEST_PREFIX
from pms.domain.enums import Side
from pms.domain.instrument import Instrument
from pms.domain.numbers import quantize_down, to_wire
from pms.errors import PmsError, TerminalError
from pms.execution.instruments import InstrumentCache
from pms.execution.orders import OrderService

log = structlog.get_logger(__name__)


@dataclass(frozen=True, slots=True)
class Leg:
    symbol: str
    side: Side
    qty: Decimal
    request_id: str


@dataclass(slots=True)
class Outcome:
    """What placing an action's legs did: the order ids placed (or resumed), and each
    failure as ``{"symbol", "side", "qty", "requestId", "error": {"code", "message"}}``.
    ``retry`` is the first failure that may succeed later (the action is not finished)."""

    orders: list[int] = field(default_factory=list)
    failures: list[dict[str, Any]] = field(default_factory=list)
    retry: Exception | None = None

    def failed(self, where: dict[str, Any], exc: Exception) -> None:
        if isinstance(exc, PmsError):
            error = {"code": exc.code, "message": exc.message}
        else:
            error = {"code": PmsError.code, "message": f"{type(exc).__name__}: {exc}"[:300]}
        self.failures.append(where | {"error": error})
        if not isinstance(exc, TerminalError) and self.retry is None:
            self.retry = exc


def split_qty(qty: Decimal, instrument: Instrument) -> list[Decimal]:
    """``qty`` in pieces of at most the market max qty (on the market step), largest first.

    A remainder below the market minimum borrows from the piece before it, so every piece
    passes the exchange's quantity filter (121 with max 120 and min 0.001: 120, 1)."""
    cap = quantize_down(instrument.market_max_qty, instrument.market_step_size)
    if qty <= cap or cap <= 0:
        return [qty]
    whole, rest = divmod(qty, cap)
    pieces = [cap] * int(whole)
    if rest > 0:
        short = instrument.market_min_qty - rest
        if short > 0:
            pieces[-1] -= short
            rest += short
        pieces.append(rest)
    return pieces


def request_id(event_id: int, symbol: str, index: int) -> str:
    base = f"{ENGINE_REQUEST_PREFIX}{event_id}:{symbol}"
    return base if index == 0 else f"{base}:{index}"


def legs_of(
    event_id: int, symbol: str, side: Side, qty: Decimal, instrument: Instrument
) -> list[Leg]:
    return [
        Leg(symbol, side, piece, request_id(event_id, symbol, index))
        for index, piece in enumerate(split_qty(qty, instrument))
    ]


def place_plan(
    orders: OrderService,
    instruments: InstrumentCache,
    event_id: int,
    sub_account_id: int,
    plan: list[dict[str, Any]],
    *,
    origin: str,
) -> Outcome:
    """Place (or resume) every leg of ``plan``; a failing leg or symbol stops only itself."""
    outcome = Outcome()
    for planned in plan:
        symbol, side, qty = planned["symbol"], Side(planned["side"]), Decimal(planned["qty"])
        where = {"symbol": symbol, "side": side.value, "qty": to_wire(qty)}
        try:
            legs = legs_of(event_id, symbol, side, qty, instruments.get(symbol))
        except Exception as exc:  # reported with the outcome, not raised
            log.warning("risk order not planned", symbol=symbol, error=str(exc))
            outcome.failed(where, exc)
            continue
        for leg in legs:
            try:
                view = orders.place_internal(
                    sub_account_id,
                    leg.symbol,
                    leg.side,
                    leg.qty,
                    origin=origin,
                    request_id=leg.request_id,
                )
            except Exception as exc:  # the other legs still go out
                log.warning(
                    "risk order failed", symbol=leg.symbol, requestId=leg.request_id, error=str(exc)
                )
                where = {
                    "symbol": leg.symbol,
                    "side": leg.side.value,
                    "qty": to_wire(leg.qty),
                    "requestId": leg.request_id,
                }
                outcome.failed(where, exc)
                continue
            outcome.orders.append(int(view["orderId"]))
    return outcome
