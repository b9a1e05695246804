"""The worker fleet's broker: built from settings at import, as ``dramatiq workers`` needs.

Every actor module imports this module first (``from workers.broker import broker``). All
processes of a namespace declare the same queues here, which the crash-redelivery sweep of
:class:`pms.messaging.broker.FastRedisBroker` relies on.
"""

from __future__ import annotations

import os

import dramatiq

from pms.clock import SystemClock
from pms.config import load_settings
from pms.logging import configure_logging
from pms.messaging.broker import build_broker, make_client
from pms.messaging.events import EventPublisher
from pms.messaging.results import ResultStore
from pms.messaging.unknown_actors import AnswerUnknownActors
from pms.messaging.wire import QUEUES

# The process edge: dramatiq imports this module in each worker process.
settings = load_settings()
# JSON at PMS_LOG_LEVEL (INFO): unconfigured structlog prints every debug line of the hot path.
configure_logging(settings, process="worker")
broker = build_broker(settings)
dramatiq.set_broker(broker)
for _queue in QUEUES:
    broker.declare_queue(_queue)

clock = SystemClock()
_client = make_client(settings.redis_url)
results = ResultStore(_client, prefix=settings.redis_prefix)
broker.add_middleware(AnswerUnknownActors(results))
if os.environ.get("PROMETHEUS_MULTIPROC_DIR") and settings.worker_metrics_port:
    # Set up by ``pms worker`` (pms.cli.worker.metrics_environment); imported only then:
    # the module reads its address and directory from the environment at import.
    from dramatiq.middleware.prometheus import Prometheus

    broker.add_middleware(Prometheus())
events = EventPublisher(_client, clock, prefix=settings.redis_prefix)

__all__ = ["QUEUES", "broker", "clock", "events", "results", "settings"]
