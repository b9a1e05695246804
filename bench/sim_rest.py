"""Sustained REST order rate against the simulator, with an aiohttp hello-world baseline.

Run: ``.venv/bin/python bench/sim_rest.py [--seconds 5] [--concurrency 16]``.
Signed market orders (alternating BUY/SELL 0.001 BTCUSDT, so no position builds up) are sent
with aiohttp by ``--concurrency`` workers; the baseline is the same client against a bare
aiohttp route that answers ``{}``, both servers in their own process.
"""

from __future__ import annotations

import argparse
import asyncio
import hashlib
import hmac
import sys
import time
from pathlib import Path

import aiohttp

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _sim_proc import free_port, process, sim

HELLO = """
import sys
from aiohttp import web
async def hello(request):
    await request.read()
    return web.json_response({})
app = web.Application()
app.router.add_post('/fapi/v1/order', hello)
web.run_app(app, host='127.0.0.1', port=int(sys.argv[1]), print=None)
"""


async def hammer(url: str, seconds: float, concurrency: int) -> tuple[int, int]:
    ok = bad = 0
    stop = time.monotonic() + seconds
    headers = {"X-MBX-APIKEY": "pms-sim-key", "Content-Type": "application/x-www-form-urlencoded"}

    async def worker(n: int, session: aiohttp.ClientSession) -> None:
        nonlocal ok, bad
        i = 0
        while time.monotonic() < stop:
            side = "BUY" if (n + i) % 2 == 0 else "SELL"
            i += 1
            query = (
                f"symbol=BTCUSDT&side={side}&type=MARKET&quantity=0.002&recvWindow=10000"
                f"&timestamp={int(time.time() * 1000)}"
            )
            sig = hmac.new(b"pms-sim-secret", query.encode(), hashlib.sha256).hexdigest()
            async with session.post(url, data=f"{query}&signature={sig}", headers=headers) as r:
                await r.read()
                if r.status == 200:
                    ok += 1
                else:
                    bad += 1

    async with aiohttp.ClientSession() as session:
        await asyncio.gather(*(worker(n, session) for n in range(concurrency)))
    return ok, bad


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--seconds", type=float, default=5.0)
    parser.add_argument("--concurrency", type=int, default=16)
    args = parser.parse_args()
    port = free_port()
    with process(["-c", HELLO, str(port)], port):
        ok, bad = asyncio.run(hammer(f"http://127.0.0.1:{port}/fapi/v1/order", args.seconds,
                                     args.concurrency))  # fmt: skip
    base = ok / args.seconds
    print(f"baseline aiohttp hello-world POST: {base:,.0f} req/s")
    port = free_port()
    with sim(port):
        ok, bad = asyncio.run(hammer(f"http://127.0.0.1:{port}/fapi/v1/order", args.seconds,
                                     args.concurrency))  # fmt: skip
    rate = ok / args.seconds
    print(f"simulator signed MARKET orders:   {rate:,.0f} orders/s ({bad} rejected)")
    print(f"ratio simulator/baseline:         {rate / base:.2f}")


if __name__ == "__main__":
    main()
