"""The engine's object graph, built once per process from settings and passed down."""

from __future__ import annotations

from dataclasses import dataclass

import redis
from sqlalchemy import Engine
from sqlalchemy.orm import Session, sessionmaker

from pms.accounts.commands import AccountCommands
from pms.clock import Clock, SystemClock
from pms.commands.runner import CommandRunner
from pms.config import ExchangeKind, Settings
from pms.db.session import make_engine, make_session_factory
from pms.exchange.binance import BinanceExchange
from pms.exchange.model import Exchange
from pms.execution.instruments import InstrumentCache
from pms.execution.notify import Notifier
from pms.execution.orders import OrderService
from pms.marketdata.prices import PriceService
from pms.messaging.events import EventPublisher
from pms.messaging.results import ResultStore
from pms.streaming.status import UserStreamWatch


def make_exchange(settings: Settings) -> Exchange:
    if settings.exchange is ExchangeKind.SIM:
        return BinanceExchange(
            settings.sim_url,
            settings.sim_api_key,
            settings.sim_api_secret.get_secret_value(),
            timeout_ms=settings.exchange_timeout_ms,
        )
    return BinanceExchange(
        None,
        settings.binance_api_key.get_secret_value(),
        settings.binance_api_secret.get_secret_value(),
        timeout_ms=settings.exchange_timeout_ms,
    )


@dataclass
class App:
    settings: Settings
    clock: Clock
    db: Engine
    sessions: sessionmaker[Session]
    redis: redis.Redis
    results: ResultStore
    events: EventPublisher
    exchange: Exchange
    instruments: InstrumentCache
    prices: PriceService
    notifier: Notifier
    runner: CommandRunner
    orders: OrderService
    accounts: AccountCommands

    def close(self) -> None:
        self.exchange.close()
        self.db.dispose()
        self.redis.close()


def build_app(
    settings: Settings,
    *,
    clock: Clock | None = None,
    exchange: Exchange | None = None,
    client: redis.Redis | None = None,
    db_pool: int = 10,
) -> App:
    clock = clock or SystemClock()
    db = make_engine(settings, pool_size=db_pool)
    sessions = make_session_factory(db)
    client = client or redis.Redis.from_url(settings.redis_url)
    results = ResultStore(client, prefix=settings.redis_prefix)
    events = EventPublisher(client, clock, prefix=settings.redis_prefix)
    exchange = exchange or make_exchange(settings)
    instruments = InstrumentCache(exchange, clock)
    prices = PriceService(client, exchange, clock, prefix=settings.redis_prefix)
    notifier = Notifier(events, client, prefix=settings.redis_prefix)
    runner = CommandRunner(sessions, results, clock)
    orders = OrderService(
        sessions,
        exchange,
        instruments,
        prices,
        notifier,
        clock,
        stream_books=UserStreamWatch(client, settings.redis_prefix),
    )
    accounts = AccountCommands(sessions, orders, notifier, clock, prices, instruments)
    return App(
        settings=settings,
        clock=clock,
        db=db,
        sessions=sessions,
        redis=client,
        results=results,
        events=events,
        exchange=exchange,
        instruments=instruments,
        prices=prices,
        notifier=notifier,
        runner=runner,
        orders=orders,
        accounts=accounts,
    )
