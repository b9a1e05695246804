"""The aiohttp application: REST routes, WebSocket endpoints, admin API, background tasks.

One event loop owns all state. Background tasks: the random walk (every ``tick_ms``), the
mark-price publisher (1 s / 3 s), housekeeping (funding settlements, listen-key expiry) and
the firehose.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from typing import Any

import orjson
from aiohttp import web

from pms.clock import Clock
from pms.sim import auth, errors
from pms.sim.admin import Admin
from pms.sim.faults import Fault, FaultKind
from pms.sim.rest import Rest, Route
from pms.sim.state import SimConfig, SimState
from pms.sim.validation import Params

log = logging.getLogger("pms.sim")
FIREHOSE_SLICE_S = 0.005


def _json(value: Any, status: int = 200, headers: dict[str, str] | None = None) -> web.Response:
    return web.Response(
        body=orjson.dumps(value), status=status, content_type="application/json", headers=headers
    )


class SimApp:
    """Build with :meth:`build`; the returned app starts its tasks on startup."""

    def __init__(self, config: SimConfig, clock: Clock) -> None:
        self.state = SimState(config, clock)
        self.rest = Rest(self.state)
        self.admin = Admin(self.state, self.housekeep)
        self._tasks: list[asyncio.Task[None]] = []
        self._stopping: asyncio.Event | None = None

    def build(self) -> web.Application:
        app = web.Application(client_max_size=1 << 20)
        for route in self.rest.routes():
            app.router.add_route(route.method, route.path, self._rest_handler(route))
        for method, path, fn in self.admin.routes():
            app.router.add_route(method, path, self.admin.handler(fn))
        app.router.add_get("/ws", self._ws_bare)
        app.router.add_get("/ws/{streams:.+}", self._ws_raw)
        app.router.add_get("/stream", self._ws_combined)
        app.router.add_get("/private/ws", self._ws_private)
        app.router.add_get("/public/ws", self._ws_public)
        app.router.add_get("/market/ws", self._ws_public)
        app.router.add_route("*", "/{tail:.*}", self._not_found)
        app.on_startup.append(self._start)
        app.on_shutdown.append(self._shutdown)
        return app

    # --- REST ----------------------------------------------------------------------------
    def _rest_handler(self, route: Route) -> Any:
        async def handle(request: web.Request) -> web.StreamResponse:
            st = self.state
            if st.latency_ms:
                await asyncio.sleep(st.latency_ms / 1000)
            now = st.clock.ms()
            weight = route.weight_of(request.raw_path.partition("?")[2])
            used, o10, o1m = st.rates.record(now, weight, *route.orders)
            headers = {"X-MBX-USED-WEIGHT-1M": str(used)}
            if route.is_order:
                headers["X-MBX-ORDER-COUNT-10S"] = str(o10)
                headers["X-MBX-ORDER-COUNT-1M"] = str(o1m)
            fault = st.faults.take(request.method, request.path)
            if fault is not None and fault.kind in (FaultKind.RATE_LIMIT, FaultKind.BANNED):
                return self._limited(fault, headers)
            if fault is not None and fault.kind is FaultKind.TIMESTAMP:
                return _json(errors.timestamp_outside().body(), 400, headers)
            try:
                params = await self._authenticate(request, route)
                response = _json(await route.handler(params), 200, headers)
            except errors.SimError as exc:
                response = _json(exc.body(), exc.status, headers)
            if fault is not None and fault.kind is FaultKind.UNKNOWN_503:
                body = {"code": -1000, "msg": errors.UNKNOWN_503_MSG}
                return _json(body, 503, headers)
            if fault is not None and fault.kind is FaultKind.TIMEOUT:
                await self._hold(fault.hold_ms)
            return response

        return handle

    def _limited(self, fault: Fault, headers: dict[str, str]) -> web.Response:
        headers = {**headers, "Retry-After": str(fault.retry_after)}
        if fault.kind is FaultKind.RATE_LIMIT:
            msg = (
                "Too many requests; current limit of IP is 2400 requests per minute. Please use "
                "the websocket for live updates to avoid polling the API."
            )
            return _json({"code": -1003, "msg": msg}, 429, headers)
        until = self.state.clock.ms() + fault.retry_after * 1000
        msg = f"Way too many requests; IP banned until {until}. Please use the websocket."
        return _json({"code": -1003, "msg": msg}, 418, headers)

    async def _hold(self, ms: int) -> None:
        stopping = self._stopping
        if stopping is None:
            return
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(stopping.wait(), ms / 1000)

    async def _authenticate(self, request: web.Request, route: Route) -> Params:
        query = request.raw_path.partition("?")[2]
        body = ""
        if request.method in ("POST", "PUT", "DELETE") and request.can_read_body:
            body = (await request.read()).decode("utf-8", "surrogateescape")
        cfg = self.state.config
        if route.security == "SIGNED":
            auth.check_api_key(request.headers.get("X-MBX-APIKEY"), cfg.api_key)
            try:
                return auth.verify(query, body, cfg.secret, self.state.clock.ms())
            except UnicodeEncodeError:
                raise errors.bad_signature() from None
        if route.security == "KEY":
            auth.check_api_key(request.headers.get("X-MBX-APIKEY"), cfg.api_key)
        return auth.merge_params(query, body)

    async def _not_found(self, request: web.Request) -> web.Response:
        msg = f"Path {request.path}, Method {request.method} is invalid"
        return _json({"code": -5000, "msg": msg}, 404)

    # --- WebSocket -----------------------------------------------------------------------
    def _streams(self, names: list[str]) -> tuple[list[str], str | None]:
        """Split URL stream names into market streams and (at most one) listen key."""
        market, key = [], None
        for name in names:
            if self.state.listen_keys.valid(name):
                key = name
            elif name:
                market.append(name)
        return market, key

    async def _ws_raw(self, request: web.Request) -> web.StreamResponse:
        streams, key = self._streams(request.match_info["streams"].split("/"))
        return await self._serve(request, streams, False, key, None)

    async def _ws_bare(self, request: web.Request) -> web.StreamResponse:
        return await self._serve(request, [], False, None, None)

    async def _ws_public(self, request: web.Request) -> web.StreamResponse:
        streams, _ = self._streams([s for s in request.query.get("streams", "").split("/") if s])
        return await self._serve(request, streams, True, None, None)

    async def _ws_combined(self, request: web.Request) -> web.StreamResponse:
        streams, key = self._streams(request.query.get("streams", "").split("/"))
        return await self._serve(request, streams, True, key, None)

    async def _ws_private(self, request: web.Request) -> web.StreamResponse:
        key = request.query.get("listenKey", "")
        if not self.state.listen_keys.valid(key):
            return _json(errors.listen_key_missing().body(), 400)
        events_text = request.query.get("events")
        events = {e for e in events_text.split("/") if e} if events_text else None
        if events is not None:
            events.add("listenKeyExpired")
        return await self._serve(request, [], False, key, events)

    async def _serve(
        self,
        request: web.Request,
        streams: list[str],
        combined: bool,
        key: str | None,
        events: set[str] | None,
    ) -> web.StreamResponse:
        return await self.state.hub.serve(
            request, streams, combined, key, events, self.state.config.heartbeat_s
        )

    # --- background tasks ----------------------------------------------------------------
    async def _start(self, app: web.Application) -> None:
        self._stopping = asyncio.Event()
        for coro in (self._walk(), self._marks(), self._housekeeping(), self._firehose()):
            self._tasks.append(asyncio.create_task(coro))

    async def _shutdown(self, app: web.Application) -> None:
        if self._stopping is not None:
            self._stopping.set()
        for task in self._tasks:
            task.cancel()
        for task in self._tasks:
            with contextlib.suppress(asyncio.CancelledError):
                await task
        await self.state.hub.drop_all()

    async def _walk(self) -> None:
        st = self.state
        while True:
            await asyncio.sleep(st.config.tick_ms / 1000)
            if st.walk_paused or st.walk_speed == 0:
                continue
            for symbol, market in st.markets.items():
                if market.walk_step(st.walk_speed):
                    st.engine.on_market_move(symbol)

    async def _marks(self) -> None:
        n = 0
        while True:
            await asyncio.sleep(1.0)
            n += 1
            streams = ("markPrice@1s", "markPrice") if n % 3 == 0 else ("markPrice@1s",)
            for market in self.state.markets.values():
                self.state.feeds.mark_price(market, streams)

    async def housekeep(self) -> None:
        """Settle due funding times, then expire a stale listen key (every 0.25 s and after
        each admin clock move)."""
        self.state.funding.catch_up(self.state.clock.ms())
        key = self.state.listen_keys.due()
        if key is not None:
            self.state.hub.expire_key(key)

    async def _housekeeping(self) -> None:
        while True:
            await asyncio.sleep(0.25)
            await self.housekeep()

    async def _firehose(self) -> None:
        st = self.state
        loop = asyncio.get_running_loop()
        seq = 0
        while True:
            if st.firehose_rate <= 0:
                await asyncio.sleep(0.05)
                continue
            started = loop.time()
            markets = [st.markets[s] for s in st.firehose_symbols] or list(st.markets.values())
            sent = 0
            # Publish in slices, catching up with the wall clock, so the rate holds even
            # when one slice takes longer than planned.
            while st.firehose_rate > 0:
                due = int((loop.time() - started) * st.firehose_rate) + 1
                if due > sent:
                    seq = st.feeds.firehose_batch(markets, due - sent, seq)
                    sent = due
                await asyncio.sleep(FIREHOSE_SLICE_S)
                if loop.time() - started > 1.0:
                    break
