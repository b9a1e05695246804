"""Market-data producers: depth diffs, partial depth, bookTicker, markPrice, aggTrade.

Every book change is published the moment it happens, so ``U``/``u``/``pu`` stay continuous
and the REST snapshot's ``lastUpdateId`` is always the ``u`` of the last published diff.
All depth-speed variants (``@depth``, ``@depth@100ms``, ...) receive every diff.
"""

from __future__ import annotations

from decimal import Decimal

import orjson

from pms.clock import Clock
from pms.sim.account import m8
from pms.sim.funding import next_funding_time
from pms.sim.market import Level, Market
from pms.sim.orders import Trade
from pms.sim.ws import Hub

SPEEDS = ("", "@100ms", "@250ms", "@500ms")


def _levels(market: Market, levels: list[Level]) -> list[list[str]]:
    fp, fq = market.spec.fmt_price, market.spec.fmt_qty
    return [[fp(p), fq(q)] for p, q in levels]


class Feeds:
    """Implements the matching engine's ``Sink`` and the periodic publishers."""

    def __init__(self, hub: Hub, clock: Clock) -> None:
        self.hub = hub
        self.clock = clock

    def user_event(self, event: dict[str, object]) -> None:
        self.hub.user_event(event)

    def agg_trade(self, market: Market, trade: Trade) -> None:
        self.hub.agg_trade(market, trade)

    def book_changed(self, market: Market) -> None:
        """Publish ``<s>@depth*`` diffs, ``<s>@depth{5,10,20}`` and ``<s>@bookTicker``.

        Diff sample: ``{"e":"depthUpdate","E":1767225600000,"T":1767225600000,"s":"BTCUSDT",
        "U":1000001,"u":1000004,"pu":1000000,"b":[["59999.9","0.712"]],"a":[["60000.1","0"]]}``
        """
        diff = market.depth_diff()
        if diff is None:
            return
        hub = self.hub
        sym = market.spec.symbol
        low = sym.lower()
        now = self.clock.ms()
        head = {"e": "depthUpdate", "E": now, "T": now, "s": sym, "U": diff.first_id,
                "u": diff.last_id, "pu": diff.prev_id}  # fmt: skip
        diff_streams = [f"{low}@depth{sp}" for sp in SPEEDS if hub.has(f"{low}@depth{sp}")]
        if diff_streams:
            body = orjson.dumps(
                {**head, "b": _levels(market, diff.bids), "a": _levels(market, diff.asks)}
            ).decode()
            for stream in diff_streams:
                hub.publish_text(stream, body)
        for n in (5, 10, 20):
            streams = [f"{low}@depth{n}{sp}" for sp in SPEEDS if hub.has(f"{low}@depth{n}{sp}")]
            if not streams:
                continue
            body = orjson.dumps(
                {**head, "b": _levels(market, market.side_levels(True, n)),
                 "a": _levels(market, market.side_levels(False, n))}
            ).decode()  # fmt: skip
            for stream in streams:
                hub.publish_text(stream, body)
        if hub.has(f"{low}@bookTicker"):
            self.book_ticker(market)

    def book_ticker(self, market: Market) -> None:
        """``{"e":"bookTicker","u":1000004,"E":...,"T":...,"s":"BTCUSDT","b":"59999.9",
        "B":"0.712","a":"60000.1","A":"1.204"}``"""
        bid, ask = market.best_level(True), market.best_level(False)
        if bid is None or ask is None:
            return  # a side taken to its last walkable level: nothing to quote
        now = self.clock.ms()
        fp, fq = market.spec.fmt_price, market.spec.fmt_qty
        self.hub.publish(
            f"{market.spec.symbol.lower()}@bookTicker",
            {"e": "bookTicker", "u": market.update_id, "E": now, "T": now,
             "s": market.spec.symbol, "b": fp(bid[0]), "B": fq(bid[1]), "a": fp(ask[0]),
             "A": fq(ask[1])},
        )  # fmt: skip

    def mark_price(self, market: Market, streams: tuple[str, ...]) -> None:
        """``{"e":"markPriceUpdate","E":...,"s":"BTCUSDT","p":"60000.0","ap":"60000.0",
        "P":"60000.0","i":"60000.0","r":"0.00010000","T":1767254400000}``"""
        low = market.spec.symbol.lower()
        names = [f"{low}@{s}" for s in streams if self.hub.has(f"{low}@{s}")]
        if not names:
            return
        now = self.clock.ms()
        mark = str(market.mark)
        body = orjson.dumps(
            {"e": "markPriceUpdate", "E": now, "s": market.spec.symbol, "p": mark, "ap": mark,
             "P": str(market.index), "i": str(market.index), "r": m8(market.funding_rate),
             "T": next_funding_time(now)}
        ).decode()  # fmt: skip
        for name in names:
            self.hub.publish_text(name, body)

    def firehose_batch(self, markets: list[Market], count: int, seq: int) -> int:
        """Publish ``count`` bookTicker/markPrice messages round-robin; return the next seq.

        The body is formatted from a template, not a dict, to keep per-message cost low.
        """
        hub = self.hub
        now = self.clock.ms()
        n = len(markets)
        for k in range(count):
            m = markets[(seq + k) % n]
            low = m.spec.symbol.lower()
            if (seq + k) // n % 2 == 0:
                stream = f"{low}@bookTicker"
                body = (
                    f'{{"e":"bookTicker","u":{seq + k},"E":{now},"T":{now},"s":"{m.spec.symbol}",'
                    f'"b":"{m.best_bid()}","B":"1.000","a":"{m.best_ask()}","A":"1.000"}}'
                )
            else:
                stream = f"{low}@markPrice@1s"
                body = (
                    f'{{"e":"markPriceUpdate","E":{now},"s":"{m.spec.symbol}","p":"{m.mark}",'
                    f'"i":"{m.index}","P":"{m.index}","r":"{m8(m.funding_rate)}","T":{now}}}'
                )
            hub.publish_text(stream, body)
        return seq + count


ZERO = Decimal(0)
