"""WebSocket hub: market streams, user-data streams and live (UN)SUBSCRIBE on one port.

URL forms (all on the REST port):

* ``/ws/<stream>[/<stream>...]`` raw payloads; ``/ws/<listenKey>`` classic user data;
* ``/stream?streams=a/b`` combined, each message ``{"stream":"btcusdt@bookTicker","data":{...}}``;
* ``/private/ws?listenKey=<k>[&events=ORDER_TRADE_UPDATE/ACCOUNT_UPDATE]`` (2026 form).

On an open connection: ``{"method":"SUBSCRIBE","params":["btcusdt@aggTrade"],"id":1}`` →
``{"result":null,"id":1}``; ``LIST_SUBSCRIPTIONS`` → ``{"result":["btcusdt@aggTrade"],"id":3}``.

Each message is serialised once per stream and queued to every subscriber; a writer task per
connection drains its queue in a batch. A subscriber more than ``MAX_QUEUE`` messages behind
is disconnected, as Binance does with slow consumers.
"""

from __future__ import annotations

import asyncio
import contextlib
import re
from collections import deque
from collections.abc import Iterable

import orjson
from aiohttp import WSMsgType, web

from pms.clock import Clock
from pms.sim.market import Market
from pms.sim.orders import Trade

MAX_QUEUE = 200_000
MAX_STREAMS = 200
STREAM_RE = re.compile(
    r"^[a-z0-9]{2,30}@(markPrice(@1s)?|bookTicker|aggTrade|depth(5|10|20)?(@(100|250|500)ms)?)$"
)


class Conn:
    """One client connection. ``user_key`` is set for user-data connections."""

    def __init__(self, ws: web.WebSocketResponse, combined: bool) -> None:
        self.ws = ws
        self.combined = combined
        self.streams: set[str] = set()
        self.user_key: str | None = None
        self.events: set[str] | None = None
        self.queue: deque[str] = deque()
        self.wake = asyncio.Event()
        self.closed = False
        self.close_after: tuple[int, bytes] | None = None

    def put(self, text: str) -> None:
        self.queue.append(text)
        if not self.wake.is_set():
            self.wake.set()

    async def writer(self) -> None:
        ws = self.ws
        while not self.closed:
            await self.wake.wait()
            self.wake.clear()
            if len(self.queue) > MAX_QUEUE:
                await ws.close(code=1008, message=b"slow consumer")
                return
            try:
                while self.queue:
                    await ws.send_str(self.queue.popleft())
                if self.close_after is not None:
                    await ws.close(code=self.close_after[0], message=self.close_after[1])
                    return
            except (ConnectionError, RuntimeError):
                return


class Hub:
    def __init__(self, clock: Clock) -> None:
        self.clock = clock
        self.conns: set[Conn] = set()
        self.by_stream: dict[str, set[Conn]] = {}
        self.sent = 0

    # --- publishing --------------------------------------------------------------------
    def has(self, stream: str) -> bool:
        return bool(self.by_stream.get(stream))

    def publish(self, stream: str, payload: dict[str, object]) -> None:
        subs = self.by_stream.get(stream)
        if subs:
            self.publish_text(stream, orjson.dumps(payload).decode(), subs)

    def publish_text(self, stream: str, raw: str, subs: Iterable[Conn] | None = None) -> None:
        targets = self.by_stream.get(stream) if subs is None else subs
        if not targets:
            return
        combined: str | None = None
        for conn in targets:
            if conn.combined:
                if combined is None:
                    combined = f'{{"stream":"{stream}","data":{raw}}}'
                conn.put(combined)
            else:
                conn.put(raw)
            self.sent += 1

    def user_event(self, event: dict[str, object]) -> None:
        raw: str | None = None
        kind = str(event.get("e", ""))
        for conn in list(self.conns):
            if conn.user_key is None or (conn.events is not None and kind not in conn.events):
                continue
            if raw is None:
                raw = orjson.dumps(event).decode()
            conn.put(f'{{"stream":"{conn.user_key}","data":{raw}}}' if conn.combined else raw)

    def agg_trade(self, market: Market, trade: Trade) -> None:
        """``<s>@aggTrade``: ``{"e":"aggTrade","E":1767225600000,"s":"BTCUSDT","a":5,
        "p":"60000.1","q":"0.010","nq":"0.010","f":7,"l":7,"T":1767225600000,"m":false}``"""
        stream = f"{market.spec.symbol.lower()}@aggTrade"
        agg = market.next_agg_id()
        if not self.has(stream):
            return
        q = market.spec.fmt_qty(trade.qty)
        self.publish(
            stream,
            {
                "e": "aggTrade",
                "E": self.clock.ms(),
                "s": market.spec.symbol,
                "a": agg,
                "p": market.spec.fmt_price(trade.price),
                "q": q,
                "nq": q,
                "f": trade.trade_id,
                "l": trade.trade_id,
                "T": trade.time,
                "m": trade.buy == trade.maker,
            },
        )

    # --- connections ---------------------------------------------------------------------
    def subscribe(self, conn: Conn, streams: Iterable[str]) -> None:
        for s in streams:
            conn.streams.add(s)
            self.by_stream.setdefault(s, set()).add(conn)

    def unsubscribe(self, conn: Conn, streams: Iterable[str]) -> None:
        for s in list(streams):
            conn.streams.discard(s)
            subs = self.by_stream.get(s)
            if subs is not None:
                subs.discard(conn)
                if not subs:
                    del self.by_stream[s]

    async def serve(
        self,
        request: web.Request,
        streams: list[str],
        combined: bool,
        user_key: str | None = None,
        events: set[str] | None = None,
        heartbeat: float | None = 180.0,
    ) -> web.WebSocketResponse:
        ws = web.WebSocketResponse(heartbeat=heartbeat, max_msg_size=1 << 16)
        await ws.prepare(request)
        conn = Conn(ws, combined)
        conn.user_key, conn.events = user_key, events
        self.conns.add(conn)
        self.subscribe(conn, streams)
        writer = asyncio.create_task(conn.writer())
        try:
            async for msg in ws:
                if msg.type is WSMsgType.TEXT:
                    reply = self._command(conn, msg.data)
                    if reply is not None:
                        conn.put(reply)
                elif msg.type is WSMsgType.ERROR:
                    break
        finally:
            conn.closed = True
            conn.wake.set()
            self.unsubscribe(conn, list(conn.streams))
            self.conns.discard(conn)
            writer.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await writer
        return ws

    def _command(self, conn: Conn, text: str) -> str | None:
        """Handle SUBSCRIBE / UNSUBSCRIBE / LIST_SUBSCRIPTIONS; anything else is an error."""
        try:
            msg = orjson.loads(text)
        except orjson.JSONDecodeError:
            return orjson.dumps({"error": {"code": 3, "msg": "Invalid JSON"}, "id": None}).decode()
        req_id = msg.get("id") if isinstance(msg, dict) else None
        if not isinstance(msg, dict) or not isinstance(req_id, (int, str, type(None))):
            return _error(2, "Invalid request", None)
        method = msg.get("method")
        params = msg.get("params", [])
        if method == "LIST_SUBSCRIPTIONS":
            return orjson.dumps({"result": sorted(conn.streams), "id": req_id}).decode()
        if method not in ("SUBSCRIBE", "UNSUBSCRIBE"):
            return _error(2, "Invalid request: unknown method", req_id)
        if not isinstance(params, list) or not all(isinstance(p, str) for p in params):
            return _error(2, "Invalid request: params must be a list of stream names", req_id)
        if method == "SUBSCRIBE":
            bad = [p for p in params if not STREAM_RE.match(p)]
            if bad:
                return _error(2, f"Invalid request: invalid stream name {bad[0]!r}", req_id)
            if len(conn.streams | set(params)) > MAX_STREAMS:
                return _error(2, "Invalid request: too many streams", req_id)
            self.subscribe(conn, params)
        else:
            self.unsubscribe(conn, params)
        return orjson.dumps({"result": None, "id": req_id}).decode()

    async def drop_all(self, user_key: str | None = None) -> int:
        """Close every connection (or those of one listen key); return how many."""
        targets = [c for c in self.conns if user_key is None or c.user_key == user_key]
        for conn in targets:
            with contextlib.suppress(Exception):
                await conn.ws.close(code=1001, message=b"dropped by simulator")
        return len(targets)

    def expire_key(self, key: str) -> None:
        event = {"e": "listenKeyExpired", "E": self.clock.ms(), "listenKey": key}
        raw = orjson.dumps(event).decode()
        for conn in [c for c in self.conns if c.user_key == key]:
            conn.put(f'{{"stream":"{key}","data":{raw}}}' if conn.combined else raw)
            conn.user_key = None  # nothing more for this key, even before the close
            conn.close_after = (1000, b"listenKey expired")


def _error(code: int, msg: str, req_id: object) -> str:
    return orjson.dumps({"error": {"code": code, "msg": msg}, "id": req_id}).decode()


def valid_stream(name: str) -> bool:
    return bool(STREAM_RE.match(name))
