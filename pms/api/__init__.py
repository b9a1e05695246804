"""The control API (``pms api``): health, readiness, metrics, status and the Dramatiq dashboard.

| route | what |
| --- | --- |
| ``GET /health`` | liveness: the process answers (never needs the token) |
| ``GET /ready`` | 200/503 with one entry per check (Redis, Postgres, exchange, streams, scheduler, workers) |
| ``GET /metrics`` | Prometheus text: this process's registry plus gauges read from Redis/Postgres |
| ``GET /status`` | compact JSON: accounts, queues, streams, workers, scheduler |
| ``/dashboard/`` | the Dramatiq dashboard (queues, in-flight, delayed, dead messages) |

Modules: :mod:`~pms.api.probes` (the checks and the numbers, blocking I/O run in threads),
:mod:`~pms.api.metrics` (the Prometheus collector), :mod:`~pms.api.wsgi` (the dashboard's
WSGI app behind an aiohttp handler), :mod:`~pms.api.server` (routes, token, run).
"""
