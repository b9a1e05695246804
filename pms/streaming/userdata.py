"""The user-data stream: listen-key lifecycle, parsing, and the stream itself.

Listen keys (reference §2): a key lasts 60 minutes; ``PUT`` extends it (every 30 minutes
here, on the injected clock); ``-1125`` on ``PUT`` means the key is gone: the connection is
dropped and :meth:`UserStream.open` ``POST``s a new one (``POST`` returns the account's
active key, creating one if needed). ``listenKeyExpired`` on the stream does the same.

After every connection (the first one too: a restart is a gap) ``on_connected`` runs, which
the streamer uses to enqueue an order-sync, so fills missed while disconnected get booked.
Events go to a :class:`UserEventSink`; no business rule lives here.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from decimal import Decimal
from typing import Any, Protocol
from urllib.parse import quote

import orjson
import structlog
from websockets.asyncio.client import connect

from pms.clock import Clock
from pms.domain.enums import Side
from pms.domain.numbers import parse_decimal
from pms.domain.symbols import from_exchange_id, perpetual_of
from pms.errors import PmsError
from pms.exchange.model import TradeReport
from pms.streaming.reconnect import Connection, Reconnect
from pms.streaming.rest import ExchangeRest, ListenKeyMissing
from pms.streaming.status import StreamHealth

log = structlog.get_logger(__name__)

KEEPALIVE_MS = 30 * 60 * 1000
MAX_ASSET_LEN = 10  # fills.fee_asset


# --- parsers ---------------------------------------------------------------------------------
@dataclass(frozen=True, slots=True)
class OrderUpdate:
    """One ``ORDER_TRADE_UPDATE``; ``trade`` is set when ``x == TRADE`` (a fill)."""

    symbol: str  # canonical
    client_order_id: str
    exchange_order_id: str
    execution_type: str  # x: NEW, TRADE, CANCELED, EXPIRED, AMENDMENT, CALCULATED
    status: str  # X
    qty: Decimal  # q (after an amendment, the new quantity)
    price: Decimal  # p
    cum_filled: Decimal  # z
    event_ms: int
    trade: TradeReport | None


@dataclass(frozen=True, slots=True)
class AccountPosition:
    symbol: str  # canonical
    amount: Decimal
    entry_price: Decimal


@dataclass(frozen=True, slots=True)
class AccountUpdate:
    reason: str
    balances: dict[str, Decimal]  # asset → wallet balance
    positions: tuple[AccountPosition, ...]
    event_ms: int


def parse_order_trade_update(event: dict[str, Any]) -> OrderUpdate:
    """``ORDER_TRADE_UPDATE``::

    {"e":"ORDER_TRADE_UPDATE","E":1767225600000,"T":1767225600000,"o":{"s":"BTCUSDT",
     "c":"pms-17","S":"BUY","o":"LIMIT","f":"GTC","q":"0.010","p":"59000.0","ap":"59000.0",
     "sp":"0.0","x":"TRADE","X":"PARTIALLY_FILLED","i":1000000001,"l":"0.004",
     "z":"0.004","L":"59000.0","n":"0.04720000","N":"USDT","T":1767225600000,"t":7,
     "b":"0","a":"0","m":true,"R":false,"wt":"CONTRACT_PRICE","ot":"LIMIT","ps":"BOTH",
     "cp":false,"rp":"0.00000000","pP":false,"si":0,"ss":0,"V":"EXPIRE_MAKER",
     "pm":"NONE","gtd":0}}
    """
    o = event["o"]
    symbol = from_exchange_id(o["s"])
    x = str(o["x"])
    qty = parse_decimal(o["q"], "q")
    cum_filled = parse_decimal(o["z"], "z")
    if qty < 0 or cum_filled < 0:
        raise ValueError(f"negative order quantity in {o!r}")
    trade = None
    if x == "TRADE":
        # Refused here, a malformed fill makes the stream reconnect and order-sync book it
        # from REST; accepted, it would fail its booking on every retry.
        fee_asset = str(o.get("N") or "USDT")
        if len(fee_asset) > MAX_ASSET_LEN:
            raise ValueError(f"fee asset {fee_asset!r} too long")
        trade = TradeReport(
            symbol=symbol,
            trade_id=str(o["t"]),
            exchange_order_id=str(o["i"]),
            client_order_id=str(o["c"]) or None,
            side=Side(o["S"]),
            qty=_positive(o["l"], "l"),
            price=_positive(o["L"], "L"),
            fee=parse_decimal(o.get("n") or "0", "n"),
            fee_asset=fee_asset,
            is_maker=bool(o.get("m", False)),
            traded_at=datetime.fromtimestamp(int(o["T"]) / 1000, UTC),
            order_status=str(o["X"]),
            order_filled=cum_filled,
            order_qty=qty,
        )
    return OrderUpdate(
        symbol=symbol,
        client_order_id=str(o["c"]),
        exchange_order_id=str(o["i"]),
        execution_type=x,
        status=str(o["X"]),
        qty=qty,
        price=parse_decimal(o["p"], "p"),
        cum_filled=cum_filled,
        event_ms=int(event["E"]),
        trade=trade,
    )


def _positive(value: Any, field: str) -> Decimal:
    d = parse_decimal(value, field)
    if d <= 0:
        raise ValueError(f"{field} must be positive, got {value!r}")
    return d


def parse_account_update(event: dict[str, Any]) -> AccountUpdate:
    """``ACCOUNT_UPDATE``::

    {"e":"ACCOUNT_UPDATE","E":1767225600000,"T":1767225600000,"a":{"m":"ORDER",
     "B":[{"a":"USDT","wb":"999969.70000000","cw":"999969.70000000","bc":"0"}],
     "P":[{"s":"BTCUSDT","pa":"0.010","ep":"60000.0","bep":"60000.0","cr":"0.00000000",
           "up":"0.00000000","mt":"cross","iw":"0","ps":"BOTH"}]}}
    """
    a = event["a"]
    return AccountUpdate(
        reason=str(a.get("m", "")),
        balances={str(b["a"]): Decimal(b["wb"]) for b in a.get("B", [])},
        positions=tuple(
            AccountPosition(symbol, Decimal(p["pa"]), Decimal(p["ep"]))
            for p in a.get("P", [])
            if (symbol := perpetual_of(str(p["s"]))) is not None
        ),
        event_ms=int(event["E"]),
    )


# --- the stream ------------------------------------------------------------------------------
class UserEventSink(Protocol):
    def order_update(self, update: OrderUpdate) -> None: ...

    def account_update(self, update: AccountUpdate) -> None: ...


class UserStream:
    """The user-data connection (implements :class:`pms.streaming.reconnect.Stream`)."""

    name = "user"

    def __init__(
        self,
        ws_base: str,
        rest: ExchangeRest,
        sink: UserEventSink,
        health: StreamHealth,
        clock: Clock,
        *,
        on_connected: Callable[[bool], Awaitable[None]] | None = None,
        keepalive_ms: int = KEEPALIVE_MS,
    ) -> None:
        self.ws_base = ws_base.rstrip("/")
        self.rest = rest
        self.sink = sink
        self.health = health
        self.clock = clock
        self.on_connected = on_connected
        self.keepalive_ms = keepalive_ms
        self.listen_key: str | None = None
        self.key_renewed_ms = 0
        self.keys_created = 0
        self._conn: Connection | None = None

    async def open(self) -> Connection:
        key = await self.rest.create_listen_key()
        if key != self.listen_key:
            self.keys_created += 1
            log.info("listen key created", new=self.listen_key is not None)
        self.listen_key = key
        self.key_renewed_ms = self.clock.ms()
        url = f"{self.ws_base}/private/ws?listenKey={quote(key)}"
        return await connect(url, max_queue=None, compression=None, max_size=1 << 22)

    async def on_open(self, conn: Connection, reconnect: bool) -> None:
        self._conn = conn
        if self.on_connected is not None:
            await self.on_connected(reconnect)

    def on_message(self, raw: str | bytes, recv_ns: int) -> None:
        event = orjson.loads(raw)
        if "data" in event and "stream" in event:  # combined form
            event = event["data"]
        kind = event.get("e")
        self.health.event_time(event.get("E"))
        if kind == "ORDER_TRADE_UPDATE":
            if perpetual_of(str(event.get("o", {}).get("s", ""))) is None:
                return  # a contract the engine does not trade (a quarterly): not ours
            self.sink.order_update(parse_order_trade_update(event))
        elif kind == "ACCOUNT_UPDATE":
            self.sink.account_update(parse_account_update(event))
        elif kind == "listenKeyExpired":
            log.warning("listen key expired")
            self.listen_key = None
            raise Reconnect("listenKeyExpired")

    async def on_close(self, reason: str) -> None:
        self._conn = None

    # --- keepalive -----------------------------------------------------------------------
    async def keepalive(self, every_s: float = 1.0) -> None:
        """Run forever: ``PUT`` the key every ``keepalive_ms`` on the injected clock."""
        while True:
            await asyncio.sleep(every_s)
            await self.keepalive_once()

    async def keepalive_once(self) -> None:
        key = self.listen_key
        if key is None or self.clock.ms() - self.key_renewed_ms < self.keepalive_ms:
            return
        try:
            await self.rest.keepalive_listen_key(key)
        except ListenKeyMissing:
            log.warning("listen key gone (-1125): reconnecting with a new one")
            self.listen_key = None
            if self._conn is not None:
                await self._conn.close()
            return
        except PmsError as exc:
            log.warning("listen key keepalive failed; retrying", error=exc.message)
            return
        self.key_renewed_ms = self.clock.ms()
        log.info("listen key kept alive")
