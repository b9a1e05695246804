"""Client cost of a signed REST call: the keep-alive transport vs ccxt's requests stack.

Run: ``.venv/bin/python bench/exchange_call.py [--orders 300] [--rounds 6]``.
``pms sim`` runs in a subprocess (paused, so only our orders move it). Each order is two signed
calls, as on the engine's market-order path: ``POST /fapi/v1/order`` (MARKET, alternating
BUY/SELL 0.002 BTCUSDT) then ``GET /fapi/v1/userTrades`` for it. Three clients, interleaved in
``--rounds`` blocks so machine noise hits them alike:

* ``ccxt``: plain ccxt, ``make_binanceusdm(...).fapiPrivatePostOrder`` / ``...GetUserTrades``
  (requests → urllib3 → http.client), returning parsed JSON;
* ``adapter``: ``BinanceExchange.create_order`` + ``fetch_order_trades`` on the new transport,
  parsing into the engine's Decimal types as well;
* ``rest``: ``SignedRest.call`` with the same params as ``ccxt`` (sign + transport + ccxt's error
  checks, parsed JSON): the like-for-like transport comparison.

Per call: wall time p50/p99 and client CPU (``time.thread_time``: user + kernel time of the
calling thread, so the loopback TCP work of each send/recv is included on both sides).
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time
from collections.abc import Callable
from decimal import Decimal
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from _sim_proc import free_port, sim

from pms.domain.enums import OrderType, Side
from pms.exchange.binance import BinanceExchange
from pms.exchange.ccxt_factory import make_binanceusdm
from pms.exchange.model import OrderRequest

KEY, SECRET = "pms-sim-key", "pms-sim-secret"
BTC = "BTC/USDT:USDT"


class Sample:
    def __init__(self) -> None:
        self.wall: list[float] = []
        self.cpu: list[float] = []

    def timed(self, fn: Callable[[], Any]) -> Any:
        c0, w0 = time.thread_time(), time.perf_counter()
        result = fn()
        self.wall.append(time.perf_counter() - w0)
        self.cpu.append(time.thread_time() - c0)
        return result

    def row(self, name: str) -> str:
        wall = sorted(self.wall)
        p50 = statistics.median(wall) * 1e6
        p99 = wall[min(len(wall) - 1, int(len(wall) * 0.99))] * 1e6
        cpu = statistics.fmean(self.cpu) * 1e6
        return f"{name:<10} {len(wall):>6} {p50:>10.0f} {p99:>10.0f} {cpu:>12.1f}"

    def cpu_mean(self) -> float:
        return statistics.fmean(self.cpu)


def order_params(i: int, prefix: str) -> dict[str, Any]:
    return {
        "symbol": "BTCUSDT",
        "side": "BUY" if i % 2 == 0 else "SELL",
        "type": "MARKET",
        "quantity": "0.002",
        "newClientOrderId": f"{prefix}-{i}-{time.time_ns()}",
        "newOrderRespType": "RESULT",
    }


def trades_params(placed: dict[str, Any]) -> dict[str, Any]:
    return {
        "symbol": "BTCUSDT",
        "orderId": str(placed["orderId"]),
        "limit": 1000,
        "startTime": int(placed["updateTime"]) - 100,
    }


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--orders", type=int, default=300, help="orders per client")
    parser.add_argument("--rounds", type=int, default=6)
    parser.add_argument("--warmup", type=int, default=30)
    args = parser.parse_args()
    per_round = max(1, args.orders // args.rounds)
    port = free_port()
    with sim(port):
        url = f"http://127.0.0.1:{port}"
        ccxt_ex = make_binanceusdm(url, KEY, SECRET)
        ccxt_ex.enableRateLimit = False
        ccxt_ex.load_time_difference()
        adapter = BinanceExchange(url, KEY, SECRET)
        adapter.load_instruments()
        rest = adapter._rest  # the same transport, without the adapter's parsing

        samples = {"ccxt": Sample(), "adapter": Sample(), "rest": Sample()}

        def run_ccxt(i: int, s: Sample) -> None:
            placed = s.timed(lambda: ccxt_ex.fapiPrivatePostOrder(order_params(i, "c")))
            s.timed(lambda: ccxt_ex.fapiPrivateGetUserTrades(trades_params(placed)))

        def run_adapter(i: int, s: Sample) -> None:
            side = Side.BUY if i % 2 == 0 else Side.SELL
            request = OrderRequest(
                BTC, side, OrderType.MARKET, Decimal("0.002"), f"a-{i}-{time.time_ns()}"
            )
            placed = s.timed(lambda: adapter.create_order(request))
            trades = s.timed(lambda: adapter.fetch_order_trades(BTC, placed.exchange_order_id))
            assert placed.status == "FILLED" and trades, (placed, trades)

        def run_rest(i: int, s: Sample) -> None:
            placed = s.timed(lambda: rest.call("fapiPrivatePostOrder", order_params(i, "r")))
            s.timed(lambda: rest.call("fapiPrivateGetUserTrades", trades_params(placed)))

        runs = {"ccxt": run_ccxt, "adapter": run_adapter, "rest": run_rest}
        for run in runs.values():
            scratch = Sample()
            for i in range(args.warmup):
                run(i, scratch)
        load_before = os.getloadavg()
        n = 0
        for _ in range(args.rounds):
            for name, run in runs.items():
                for i in range(per_round):
                    run(n + i, samples[name])
            n += per_round
        load_after = os.getloadavg()
        adapter.close()
        ccxt_ex.session.close()

    print(
        f"{per_round * args.rounds} orders x 2 signed calls per client against pms sim "
        f"(loopback, subprocess); load average {load_before[0]:.2f} -> {load_after[0]:.2f}"
    )
    print(f"{'client':<10} {'calls':>6} {'wall p50':>10} {'wall p99':>10} {'cpu/call':>12}  (µs)")
    for name, s in samples.items():
        print(s.row(name))
    base = samples["ccxt"].cpu_mean()
    print(
        f"client CPU per call, ccxt / new: adapter {base / samples['adapter'].cpu_mean():.1f}x, "
        f"rest {base / samples['rest'].cpu_mean():.1f}x"
    )


if __name__ == "__main__":
    main()
