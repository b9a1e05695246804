"""The aiohttp application: routes, the optional bearer token, and ``run``.

Blocking probes run in threads so a slow dependency never stalls ``/health``. With
``PMS_API_TOKEN`` set, everything but ``/health`` wants ``Authorization: Bearer <token>``;
a browser opens the dashboard once with ``?token=<token>``, which sets an HttpOnly cookie.
"""

from __future__ import annotations

import asyncio
import hmac
import time
from collections.abc import Awaitable, Callable
from typing import Any

import orjson
import redis
import structlog
from aiohttp import web
from dramatiq.brokers.redis import RedisBroker

from pms.api import wsgi
from pms.api.metrics import StateCollector, render
from pms.api.probes import Probes
from pms.config import Settings
from pms.messaging.wire import QUEUES

log = structlog.get_logger(__name__)

DASHBOARD = "/dashboard"
TOKEN_COOKIE = "pms_api_token"
OPEN_PATHS = frozenset({"/health"})
PROBES: web.AppKey[Probes] = web.AppKey("probes", Probes)
COLLECTOR: web.AppKey[StateCollector] = web.AppKey("collector", StateCollector)
STARTED: web.AppKey[float] = web.AppKey("started", float)

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


def _json(body: Any, status: int = 200) -> web.Response:
    return web.Response(body=orjson.dumps(body), status=status, content_type="application/json")


def token_middleware(token: str) -> Any:
    expected = token.encode()

    @web.middleware
    async def check(request: web.Request, handler: Handler) -> web.StreamResponse:
        if not expected or request.path in OPEN_PATHS:
            return await handler(request)
        header = request.headers.get("Authorization", "")
        given = header.removeprefix("Bearer ").strip() if header.startswith("Bearer ") else ""
        given = given or request.query.get("token", "") or request.cookies.get(TOKEN_COOKIE, "")
        if not hmac.compare_digest(given.encode(), expected):
            return _json({"error": "unauthorized"}, 401)
        response = await handler(request)
        if "token" in request.query:
            response.set_cookie(TOKEN_COOKIE, given, httponly=True, samesite="Strict")
        return response

    return check


async def health(request: web.Request) -> web.Response:
    uptime = time.monotonic() - request.app[STARTED]
    return _json({"ok": True, "uptimeSec": round(uptime, 1)})


async def ready(request: web.Request) -> web.Response:
    checks = await asyncio.to_thread(request.app[PROBES].readiness)
    ok = all(c.ok for c in checks)
    body = {"ready": ok, "checks": {c.name: c.as_dict() for c in checks}}
    return _json(body, 200 if ok else 503)


async def metrics(request: web.Request) -> web.Response:
    text = await asyncio.to_thread(render, request.app[COLLECTOR])
    return web.Response(body=text, headers={"Content-Type": "text/plain; version=0.0.4"})


def _status(probes: Probes) -> dict[str, Any]:
    out: dict[str, Any] = {"ts": probes.clock_ms()}
    try:
        out["queues"] = {q.queue: q.as_dict() for q in probes.queues()}
        out["streams"] = probes.streams()
        out["workersAlive"] = probes.workers_alive()
        out["scheduler"] = probes.check_scheduler().as_dict()
    except (redis.RedisError, OSError) as exc:
        out["redisError"] = type(exc).__name__
    try:
        out["accounts"] = probes.accounts()
    except Exception as exc:  # the rest of the view is still useful
        out["postgresError"] = type(exc).__name__
    return out


async def status(request: web.Request) -> web.Response:
    return _json(await asyncio.to_thread(_status, request.app[PROBES]))


def dashboard_app(settings: Settings) -> wsgi.WsgiApp:
    from dramatiq_dashboard import DashboardApp

    # A plain broker: the dashboard only reads ``client``, ``namespace`` and the queues.
    broker = RedisBroker(  # type: ignore[no-untyped-call]
        client=redis.Redis.from_url(settings.redis_url, socket_timeout=5.0),
        namespace=settings.dramatiq_namespace,
        middleware=[],
    )
    for queue in QUEUES:
        broker.declare_queue(queue)
    app: wsgi.WsgiApp = DashboardApp(broker, DASHBOARD)
    return app


def build_api(settings: Settings, *, probes: Probes | None = None) -> web.Application:
    app = web.Application(middlewares=[token_middleware(settings.api_token.get_secret_value())])
    probes = probes or Probes(settings)
    collector = StateCollector(probes)
    app[PROBES] = probes
    app[COLLECTOR] = collector
    app[STARTED] = time.monotonic()
    dashboard = wsgi.handler(dashboard_app(settings), DASHBOARD)

    async def to_dashboard(request: web.Request) -> web.Response:
        # Returned, not raised: the token middleware then sets its cookie on the redirect,
        # and the query (a ?token=…) goes along.
        query = request.query_string
        location = DASHBOARD + "/" + (f"?{query}" if query else "")
        return web.Response(status=302, headers={"Location": location})

    app.router.add_get("/health", health)
    app.router.add_get("/ready", ready)
    app.router.add_get("/metrics", metrics)
    app.router.add_get("/status", status)
    app.router.add_get(DASHBOARD, to_dashboard)
    app.router.add_route("*", DASHBOARD + "/{tail:.*}", dashboard)

    async def close(_app: web.Application) -> None:
        await asyncio.to_thread(collector.close)
        await asyncio.to_thread(probes.close)

    app.on_cleanup.append(close)
    return app


def run(settings: Settings, host: str, port: int) -> None:
    app = build_api(settings)
    log.info(
        "api listening",
        host=host,
        port=port,
        token=bool(settings.api_token.get_secret_value()),
    )
    web.run_app(app, host=host, port=port, print=None, access_log=None, handle_signals=True)
    log.info("api stopped")
