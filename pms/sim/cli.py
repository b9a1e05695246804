"""``pms sim``: run the simulated exchange standalone until SIGINT/SIGTERM.

Example: ``pms sim --port 8765 --seed 7 --symbols BTCUSDT,ETHUSDT --tick-ms 250``.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import signal
import sys
from decimal import Decimal

from aiohttp import web

from pms.clock import SystemClock
from pms.config import load_settings
from pms.sim.app import SimApp
from pms.sim.instruments import DEFAULT_SYMBOLS
from pms.sim.state import SimConfig


def register(sub: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    parser = sub.add_parser("sim", help="run the simulated Binance USDⓈ-M exchange")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8765)
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--symbols", default=",".join(DEFAULT_SYMBOLS))
    parser.add_argument("--tick-ms", type=int, default=250, help="random-walk step interval")
    parser.add_argument("--paused", action="store_true", help="start with the walk paused")
    parser.add_argument("--balance", default="1000000", help="master USDT wallet balance")
    parser.add_argument(
        "--firehose-rate", type=int, default=0, help="publish N book/mark msgs/s (benchmarks)"
    )
    parser.add_argument(
        "--id-base",
        type=int,
        default=None,
        help="first order/trade id - 1 (default: from the clock, so ids never repeat across restarts)",
    )
    parser.add_argument("--api-key", default=None, help="default: PMS_SIM_API_KEY")
    parser.add_argument("--api-secret", default=None, help="default: PMS_SIM_API_SECRET")
    parser.set_defaults(func=run)


def main(argv: list[str] | None = None) -> int:
    """``python -m pms.sim.cli --port 8765 ...`` (the same options as ``pms sim``)."""
    parser = argparse.ArgumentParser(prog="pms")
    register(parser.add_subparsers(dest="command", required=True))
    args = parser.parse_args(["sim", *(sys.argv[1:] if argv is None else argv)])
    code: int = args.func(args)
    return code


def run(args: argparse.Namespace) -> int:
    settings = load_settings()
    config = SimConfig(
        api_key=args.api_key or settings.sim_api_key,
        secret=args.api_secret or settings.sim_api_secret.get_secret_value(),
        seed=args.seed,
        symbols=tuple(s.strip().upper() for s in args.symbols.split(",") if s.strip()),
        tick_ms=max(1, args.tick_ms),
        paused=args.paused,
        balance=Decimal(args.balance),
        id_base=args.id_base,
    )
    asyncio.run(_serve(config, args.host, args.port, args.firehose_rate))
    return 0


async def _serve(config: SimConfig, host: str, port: int, firehose: int) -> None:
    sim = SimApp(config, SystemClock())
    runner = web.AppRunner(sim.build(), handle_signals=False, shutdown_timeout=2)
    await runner.setup()
    await web.TCPSite(runner, host, port, reuse_address=True).start()
    sim.state.firehose_rate = firehose
    print(f"pms sim listening on http://{host}:{port} (symbols {','.join(config.symbols)})")
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        with contextlib.suppress(NotImplementedError):
            loop.add_signal_handler(sig, stop.set)
    try:
        await stop.wait()
    finally:
        await runner.cleanup()
        print("pms sim stopped")


if __name__ == "__main__":
    sys.exit(main())
