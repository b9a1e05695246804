"""``/metrics``: this process's Prometheus registry plus gauges read from Redis and Postgres.

The engine's processes keep their own counters (streamer, workers); the API adds the numbers
an operator alerts on and that only exist in shared state: queue depths, live consumers,
accounts, open positions and position drift (exchange minus the sum of our books, per
symbol; refreshed at most every :data:`DRIFT_EVERY_S` because it asks the exchange).
"""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from decimal import Decimal
from typing import TYPE_CHECKING

import structlog
from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.core import GaugeMetricFamily, Metric
from prometheus_client.registry import REGISTRY, Collector

from pms.api.probes import Probes

if TYPE_CHECKING:
    from pms.exchange.model import Exchange

log = structlog.get_logger(__name__)

DRIFT_EVERY_S = 15.0


class StateCollector(Collector):
    def __init__(self, probes: Probes, exchange: Exchange | None = None) -> None:
        self.probes = probes
        self._exchange = exchange
        self._drift: dict[str, float] = {}
        self._drift_at = 0.0
        self._lock = threading.Lock()

    def collect(self) -> Iterator[Metric]:
        yield from self._queues()
        yield from self._accounts()
        yield from self._drift_metric()

    def _queues(self) -> Iterator[Metric]:
        depth = GaugeMetricFamily(
            "pms_queue_messages", "Dramatiq messages per queue and state", labels=["queue", "state"]
        )
        alive = GaugeMetricFamily("pms_workers_alive", "Dramatiq consumers with a fresh heartbeat")
        up = GaugeMetricFamily("pms_redis_up", "1 when Redis answered this scrape")
        try:
            for q in self.probes.queues():
                for state, value in q.as_dict().items():
                    depth.add_metric([q.queue, state], value)
            alive.add_metric([], self.probes.workers_alive())
            up.add_metric([], 1)
        except Exception as exc:  # a scrape never fails because a dependency is down
            log.warning("metrics: redis unreadable", error=type(exc).__name__)
            up.add_metric([], 0)
        yield from (depth, alive, up)

    def _accounts(self) -> Iterator[Metric]:
        accounts = GaugeMetricFamily(
            "pms_sub_accounts", "Sub-accounts (house excluded) by status", labels=["status"]
        )
        positions = GaugeMetricFamily(
            "pms_open_positions", "Open positions per symbol", labels=["symbol"]
        )
        up = GaugeMetricFamily("pms_postgres_up", "1 when Postgres answered this scrape")
        try:
            view = self.probes.accounts()
            for status, n in view["byStatus"].items():
                accounts.add_metric([status], n)
            for symbol, n in view["openPositions"].items():
                positions.add_metric([symbol], n)
            up.add_metric([], 1)
        except Exception as exc:
            log.warning("metrics: postgres unreadable", error=type(exc).__name__)
            up.add_metric([], 0)
        yield from (accounts, positions, up)

    def _drift_metric(self) -> Iterator[Metric]:
        gauge = GaugeMetricFamily(
            "pms_position_drift",
            "Exchange position minus the sum of our books, per symbol",
            labels=["symbol"],
        )
        for symbol, value in self._refresh_drift().items():
            gauge.add_metric([symbol], value)
        yield gauge

    def _refresh_drift(self) -> dict[str, float]:
        with self._lock:
            if time.monotonic() - self._drift_at < DRIFT_EVERY_S:
                return self._drift
            self._drift_at = time.monotonic()
            try:
                if self._exchange is None:
                    from pms.app import make_exchange  # ccxt: seconds to import, so late

                    self._exchange = make_exchange(self.probes.settings)
                theirs = {p.symbol: p.qty for p in self._exchange.fetch_positions()}
                ours = {s: Decimal(q) for s, q in self.probes.accounts()["bookQty"].items()}
            except Exception as exc:
                log.warning("metrics: drift not computed", error=type(exc).__name__)
                return self._drift
            self._drift = {
                s: float(theirs.get(s, Decimal(0)) - ours.get(s, Decimal(0)))  # float-ok: metric
                for s in sorted(set(theirs) | set(ours))
            }
            return self._drift

    def close(self) -> None:
        if self._exchange is not None:
            self._exchange.close()


def render(collector: StateCollector) -> bytes:
    """The process registry (``python_*``, ``process_*``, anything imported) plus state."""
    state = CollectorRegistry(auto_describe=False)
    state.register(collector)
    return generate_latest(REGISTRY) + generate_latest(state)
