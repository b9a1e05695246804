"""WebSocket message rate from the simulator's firehose to one client, with a baseline.

Run: ``.venv/bin/python bench/sim_ws.py [--seconds 5] [--rate 40000]``.
The simulator (own process) publishes bookTicker/markPrice at ``--rate`` msgs/s over 4
symbols on one combined-stream connection; one ``websockets`` client counts what arrives.
Baseline: a bare aiohttp WS server that sends the same-sized pre-built text frame in a tight
loop to the same client.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
import time
import urllib.request
from pathlib import Path

from websockets.asyncio.client import connect

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _sim_proc import free_port, process, sim

BARE = """
import asyncio, sys
from aiohttp import web
MSG = ('{"stream":"btcusdt@bookTicker","data":{"e":"bookTicker","u":123456,"E":1767225600000,'
       '"T":1767225600000,"s":"BTCUSDT","b":"60000.0","B":"1.000","a":"60000.1","A":"1.000"}}')
async def ws(request):
    w = web.WebSocketResponse()
    await w.prepare(request)
    try:
        while True:
            for _ in range(200):
                await w.send_str(MSG)
            await asyncio.sleep(0)
    except Exception:
        pass
    return w
app = web.Application()
app.router.add_get('/stream', ws)
web.run_app(app, host='127.0.0.1', port=int(sys.argv[1]), print=None)
"""
STREAMS = "/".join(f"{s}@bookTicker/{s}@markPrice@1s" for s in ("btcusdt", "ethusdt",
                                                                  "solusdt", "bnbusdt"))  # fmt: skip


async def count(url: str, seconds: float, warmup: float = 1.0) -> int:
    async with connect(url, max_queue=None, compression=None) as ws:
        end_warm = time.monotonic() + warmup
        while time.monotonic() < end_warm:
            await ws.recv()
        n = 0
        stop = time.monotonic() + seconds
        while time.monotonic() < stop:
            await ws.recv()
            n += 1
        return n


def admin(port: int, path: str, body: object) -> None:
    req = urllib.request.Request(f"http://127.0.0.1:{port}{path}", data=json.dumps(body).encode(),
                                 method="POST")  # fmt: skip
    urllib.request.urlopen(req, timeout=5).read()


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--seconds", type=float, default=5.0)
    parser.add_argument("--rate", type=int, default=40000)
    args = parser.parse_args()
    port = free_port()
    with process(["-c", BARE, str(port)], port):
        n = asyncio.run(count(f"ws://127.0.0.1:{port}/stream", args.seconds))
    base = n / args.seconds
    print(f"baseline bare aiohttp WS sender:  {base:,.0f} msgs/s")
    port = free_port()
    with sim(port):
        admin(port, "/sim/firehose", {"rate": args.rate,
                                      "symbols": ["BTCUSDT", "ETHUSDT", "SOLUSDT", "BNBUSDT"]})  # fmt: skip
        n = asyncio.run(count(f"ws://127.0.0.1:{port}/stream?streams={STREAMS}", args.seconds))
    rate = n / args.seconds
    print(f"simulator firehose (target {args.rate:,}/s): {rate:,.0f} msgs/s received")
    print(f"ratio simulator/baseline:         {rate / base:.2f}")


if __name__ == "__main__":
    main()
