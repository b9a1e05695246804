"""Streamer ingest: WebSocket messages/s into Redis and receive → visible-in-Redis latency.

Run: ``.venv/bin/python bench/streamer_ingest.py [--seconds 5] [--rate 20000] [--max-rate 80000]``

The simulator runs in its own process (no shared GIL) and publishes its firehose
(bookTicker + markPrice@1s, round-robin over 4 symbols) to one combined-stream connection.
The streamer side is the production code path: :func:`pms.streaming.reconnect.run_stream` +
:class:`pms.streaming.market.MarketStream` (parse, update state) +
:class:`pms.streaming.cache.CacheWriter` (coalesced, pipelined SETs to a real Redis).

* latency: every message is stamped when ``recv()`` returns; when the pipeline holding its
  symbol's state completes, ``done - stamp`` is its receive → visible time. Measured at
  ``--rate`` (the SPEC load, 20,000/s);
* throughput: messages ingested per second with the firehose at ``--max-rate`` (more than one
  client can take), i.e. the streamer's capacity;
* baseline (same run, same firehose): a bare ``recv()`` + ``orjson.loads`` + parse loop
  without Redis; ratio = streamer / baseline.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
import time
import urllib.request
from pathlib import Path

import orjson
import redis.asyncio as aioredis
from websockets.asyncio.client import connect

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from _sim_proc import free_port, sim

from pms.clock import SystemClock
from pms.config import load_settings
from pms.streaming.cache import CacheWriter
from pms.streaming.market import MarketCache, MarketStream, parse_book_ticker, parse_mark_price
from pms.streaming.reconnect import ReconnectPolicy, run_stream
from pms.streaming.rest import ExchangeRest
from pms.streaming.status import StatusBoard

SYMBOLS = ["BTCUSDT", "ETHUSDT", "SOLUSDT", "BNBUSDT"]
KINDS = ("markPrice@1s", "bookTicker")
STREAMS = "/".join(f"{s.lower()}@{k}" for s in SYMBOLS for k in KINDS)


def admin(port: int, path: str, body: object) -> None:
    req = urllib.request.Request(
        f"http://127.0.0.1:{port}{path}", data=json.dumps(body).encode(), method="POST"
    )
    urllib.request.urlopen(req, timeout=5).read()


def firehose(port: int, rate: int) -> None:
    admin(port, "/sim/firehose", {"rate": rate, "symbols": SYMBOLS})


async def baseline(port: int, seconds: float, warmup: float = 1.0) -> float:
    """A bare receive-and-parse loop: no state, no Redis."""
    url = f"ws://127.0.0.1:{port}/stream?streams={STREAMS}"
    async with connect(url, max_queue=None, compression=None) as ws:
        end = time.monotonic() + warmup
        while time.monotonic() < end:
            await ws.recv()
        n = 0
        stop = time.monotonic() + seconds
        while time.monotonic() < stop:
            data = orjson.loads(await ws.recv())["data"]
            if data["e"] == "bookTicker":
                parse_book_ticker(data)
            else:
                parse_mark_price(data)
            n += 1
        return n / seconds


async def streamer(port: int, seconds: float, warmup: float = 1.0) -> tuple[float, list[int]]:
    """The streamer's market path; returns (messages/s, latencies in ns)."""
    settings = load_settings()
    client = aioredis.Redis.from_url(settings.redis_url)
    prefix = f"{settings.redis_prefix}bench-streamer:"
    latencies: list[int] = []
    measuring = [False]

    def on_flush(stamps: list[int], done: int) -> None:
        if measuring[0]:
            latencies.extend(done - s for s in stamps)

    clock = SystemClock()
    board = StatusBoard(client, clock, prefix=prefix)
    cache = CacheWriter(client, on_flush=on_flush)
    rest = ExchangeRest(f"http://127.0.0.1:{port}", "pms-sim-key", "pms-sim-secret")
    stream = MarketStream(
        "market", f"ws://127.0.0.1:{port}/stream", MarketCache(cache, prefix), rest,
        board.stream("market"), KINDS,
    )  # fmt: skip
    await stream.set_symbols(["BTC/USDT:USDT", "ETH/USDT:USDT", "SOL/USDT:USDT", "BNB/USDT:USDT"])
    writer = asyncio.create_task(cache.run())
    runner = asyncio.create_task(run_stream(stream, board, ReconnectPolicy(), clock=clock))
    health = board.stream("market")
    await asyncio.sleep(warmup)
    start_n, start_t = health.messages, time.monotonic()
    measuring[0] = True
    await asyncio.sleep(seconds)
    measuring[0] = False
    rate = (health.messages - start_n) / (time.monotonic() - start_t)
    reconnects = health.reconnects
    for task in (runner, writer):
        task.cancel()
    await asyncio.gather(runner, writer, return_exceptions=True)
    await cache.flush()
    keys = [k async for k in client.scan_iter(match=f"{prefix}*")]
    if keys:
        await client.delete(*keys)
    await client.aclose()
    await rest.close()
    if reconnects:
        print(f"  (warning: {reconnects} reconnects during the run)")
    print(f"  cache batches: {cache.batches:,}, keys written: {cache.writes:,}")
    return rate, latencies


def pct(values: list[int], q: float) -> float:
    if not values:
        return float("nan")
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))] / 1e6


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--seconds", type=float, default=5.0)
    parser.add_argument("--rate", type=int, default=20_000, help="load for the latency run")
    parser.add_argument("--max-rate", type=int, default=80_000, help="load for capacity runs")
    args = parser.parse_args()
    port = free_port()
    with sim(port, "--symbols", ",".join(SYMBOLS)):
        firehose(port, args.max_rate)
        base = asyncio.run(baseline(port, args.seconds))
        cap, _ = asyncio.run(streamer(port, args.seconds))
        firehose(port, args.rate)
        at_rate, lat = asyncio.run(streamer(port, args.seconds))
        firehose(port, 0)
    print(f"firehose {args.max_rate:,}/s requested, one connection, {args.seconds:.0f} s each:")
    print(f"  baseline bare recv+parse loop (no Redis): {base:>9,.0f} msgs/s")
    print(f"  streamer ingest into Redis:               {cap:>9,.0f} msgs/s")
    print(f"  ratio streamer/baseline:                  {cap / base:>9.2f}")
    print(f"firehose {args.rate:,}/s requested (SPEC load):")
    print(f"  streamer ingested:                        {at_rate:>9,.0f} msgs/s")
    print(
        f"  receive -> visible in Redis over {len(lat):,} msgs: p50 {pct(lat, 0.5):.2f} ms, "
        f"p99 {pct(lat, 0.99):.2f} ms, p99.9 {pct(lat, 0.999):.2f} ms, max {pct(lat, 1.0):.2f} ms"
    )
    ok = cap >= 20_000 and at_rate >= 0.97 * args.rate and pct(lat, 0.99) <= 5.0
    print(f"SPEC §10 (>= 20,000 msgs/s, p99 <= 5 ms): {'met' if ok else 'NOT met'}")


if __name__ == "__main__":
    main()
