"""The admin API under ``/sim/...``: JSON in, JSON out, no signature. Drives tests and demos.

Examples::

    POST /sim/price {"symbol":"BTCUSDT","price":"61000"}    -> {"symbol":"BTCUSDT","price":"61000.0"}
    POST /sim/price {"symbol":"BTCUSDT","jumpPct":"-5"}     (jump by a percentage)
    POST /sim/walk {"paused":true,"speed":1.0}
    POST /sim/faults {"kind":"429","count":1,"path":"/fapi/v1/order"}
    POST /sim/funding {"symbol":"BTCUSDT","rate":"0.0001"}  (rate: string, |rate| <= 0.03)
    POST /sim/funding/settle {}  -> {"fundingTime":...,"fees":{"BTCUSDT":"-6.00000000"}}
    GET  /sim/state -> {"orders":[...],"fills":[...],"positions":[...],"balances":{...},...}

Errors answer 400 ``{"error":"..."}``.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from decimal import Decimal
from typing import Any

import orjson
from aiohttp import web

from pms.clock import TestClock
from pms.domain.numbers import parse_decimal
from pms.sim.account import m8
from pms.sim.errors import SimError
from pms.sim.faults import Fault, FaultKind
from pms.sim.funding import parse_rate
from pms.sim.state import SimState

AdminHandler = Callable[[dict[str, Any]], Awaitable[Any]]


class AdminError(Exception):
    pass


def _dec(body: dict[str, Any], key: str) -> Decimal:
    if key not in body:
        raise AdminError(f"missing {key}")
    try:
        return parse_decimal(body[key], key)
    except ValueError as exc:
        raise AdminError(str(exc)) from None


def _int(body: dict[str, Any], key: str, default: int) -> int:
    value = body.get(key, default)
    if isinstance(value, bool) or not isinstance(value, int):
        raise AdminError(f"{key} must be an integer")
    return value


class Admin:
    def __init__(self, state: SimState, on_clock: Callable[[], Awaitable[None]]) -> None:
        self.state = state
        self.on_clock = on_clock

    def routes(self) -> list[tuple[str, str, AdminHandler]]:
        return [
            ("POST", "/sim/price", self.price),
            ("POST", "/sim/walk", self.walk),
            ("POST", "/sim/ws/drop", self.ws_drop),
            ("POST", "/sim/listenkeys/expire", self.expire_keys),
            ("POST", "/sim/latency", self.latency),
            ("POST", "/sim/faults", self.add_fault),
            ("GET", "/sim/faults", self.list_faults),
            ("DELETE", "/sim/faults", self.clear_faults),
            ("GET", "/sim/state", self.snapshot),
            ("POST", "/sim/reset", self.reset),
            ("POST", "/sim/userstream/drop", self.drop_trades),
            ("POST", "/sim/depth/gap", self.depth_gap),
            ("POST", "/sim/positions/adjust", self.adjust_position),
            ("POST", "/sim/firehose", self.firehose),
            ("POST", "/sim/clock", self.clock),
            ("POST", "/sim/funding", self.funding_rate),
            ("POST", "/sim/funding/settle", self.funding_settle),
        ]

    def handler(self, fn: AdminHandler) -> Callable[[web.Request], Awaitable[web.Response]]:
        async def handle(request: web.Request) -> web.Response:
            body: dict[str, Any] = {}
            raw = await request.read()
            if raw.strip():
                try:
                    parsed = orjson.loads(raw)
                except orjson.JSONDecodeError:
                    return _json({"error": "body must be JSON"}, 400)
                if not isinstance(parsed, dict):
                    return _json({"error": "body must be a JSON object"}, 400)
                body = parsed
            try:
                return _json(await fn(body), 200)
            except (AdminError, SimError) as exc:
                return _json({"error": str(exc)}, 400)

        return handle

    async def price(self, body: dict[str, Any]) -> Any:
        market = self.state.market(str(body.get("symbol", "")))
        if "jumpPct" in body:
            target = market.mid * (1 + _dec(body, "jumpPct") / 100)
        else:
            target = _dec(body, "price")
        if target <= 0:
            raise AdminError("price must be positive")
        market.set_mid(target)
        self.state.engine.on_market_move(market.spec.symbol)
        self.state.feeds.mark_price(market, ("markPrice@1s", "markPrice"))
        return {"symbol": market.spec.symbol, "price": str(market.mid)}

    async def walk(self, body: dict[str, Any]) -> Any:
        if "paused" in body:
            self.state.walk_paused = bool(body["paused"])
        if "speed" in body:
            speed = body["speed"]
            if isinstance(speed, bool) or not isinstance(speed, (int, float)) or speed < 0:
                raise AdminError("speed must be a non-negative number")
            self.state.walk_speed = float(speed)  # float-ok: a speed factor, not money
        return {"paused": self.state.walk_paused, "speed": self.state.walk_speed}

    async def ws_drop(self, body: dict[str, Any]) -> Any:
        return {"dropped": await self.state.hub.drop_all()}

    async def expire_keys(self, body: dict[str, Any]) -> Any:
        key = self.state.listen_keys.delete()
        if key is not None:
            self.state.hub.expire_key(key)
        return {"expired": [key] if key else []}

    async def latency(self, body: dict[str, Any]) -> Any:
        ms = _int(body, "ms", 0)
        if not 0 <= ms <= 120_000:
            raise AdminError("ms must be within 0..120000")
        self.state.latency_ms = ms
        return {"ms": ms}

    async def add_fault(self, body: dict[str, Any]) -> Any:
        try:
            kind = FaultKind(str(body.get("kind")))
        except ValueError:
            raise AdminError(f"kind must be one of {[k.value for k in FaultKind]}") from None
        path = body.get("path")
        method = body.get("method")
        if path is not None and not isinstance(path, str):
            raise AdminError("path must be a string")
        if method is not None and not isinstance(method, str):
            raise AdminError("method must be a string")
        fault = Fault(
            kind=kind,
            count=_int(body, "count", 1),
            path=path,
            method=method.upper() if method else None,
            retry_after=_int(body, "retryAfter", 1),
            hold_ms=_int(body, "holdMs", 30_000),
        )
        self.state.faults.add(fault)
        return {"faults": self.state.faults.payload()}

    async def list_faults(self, body: dict[str, Any]) -> Any:
        return {"faults": self.state.faults.payload()}

    async def clear_faults(self, body: dict[str, Any]) -> Any:
        self.state.faults.clear()
        return {"faults": []}

    async def snapshot(self, body: dict[str, Any]) -> Any:
        return self.state.snapshot()

    async def reset(self, body: dict[str, Any]) -> Any:
        self.state.reset()
        return {"ok": True}

    async def drop_trades(self, body: dict[str, Any]) -> Any:
        self.state.engine.drop_trade_events = _int(body, "count", 1)
        return {"count": self.state.engine.drop_trade_events}

    async def depth_gap(self, body: dict[str, Any]) -> Any:
        market = self.state.market(str(body.get("symbol", "")))
        market.skip_update_id()
        return {"symbol": market.spec.symbol, "skipped": market.update_id}

    async def adjust_position(self, body: dict[str, Any]) -> Any:
        market = self.state.market(str(body.get("symbol", "")))
        qty = _dec(body, "qty")
        if qty % market.spec.step != 0:
            raise AdminError("qty must be a multiple of the step size")
        self.state.engine.reset_position(market.spec.symbol, qty)
        return {"symbol": market.spec.symbol, "positionAmt": str(
            self.state.account.positions[market.spec.symbol].amt)}  # fmt: skip

    async def firehose(self, body: dict[str, Any]) -> Any:
        rate = _int(body, "rate", 0)
        if not 0 <= rate <= 1_000_000:
            raise AdminError("rate must be within 0..1000000")
        symbols = body.get("symbols") or list(self.state.markets)
        if not isinstance(symbols, list):
            raise AdminError("symbols must be a list")
        self.state.firehose_symbols = [self.state.market(str(s)).spec.symbol for s in symbols]
        self.state.firehose_rate = rate
        return {"rate": rate, "symbols": self.state.firehose_symbols}

    async def clock(self, body: dict[str, Any]) -> Any:
        clock = self.state.clock
        if not isinstance(clock, TestClock):
            raise AdminError("the simulator runs on the system clock")
        clock.advance(ms=_int(body, "advanceMs", 0))
        await self.on_clock()
        return {"now": clock.ms()}

    async def funding_rate(self, body: dict[str, Any]) -> Any:
        market = self.state.market(str(body.get("symbol", "")))
        if "rate" not in body:
            raise AdminError("missing rate")
        try:
            rate = parse_rate(body["rate"])
        except ValueError as exc:
            raise AdminError(str(exc)) from None
        self.state.funding.set_rate(market.spec.symbol, rate)
        self.state.feeds.mark_price(market, ("markPrice@1s", "markPrice"))
        return {"symbol": market.spec.symbol, "rate": m8(rate)}

    async def funding_settle(self, body: dict[str, Any]) -> Any:
        now = self.state.clock.ms()
        fees = self.state.funding.settle_now(now)
        return {"fundingTime": now, "fees": {s: m8(fee) for s, fee in fees.items()}}


def _json(value: Any, status: int) -> web.Response:
    return web.Response(body=orjson.dumps(value), status=status, content_type="application/json")
