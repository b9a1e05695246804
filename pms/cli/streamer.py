"""``pms streamer``: the exchange WebSockets → the Redis price/book cache and the booking path.

One long-lived asyncio process (see ``docs/streamer.md``). SIGINT/SIGTERM close the sockets,
book what is queued, flush the cache and exit 0.

    pms streamer                              # BTC/USDT:USDT, ETH/USDT:USDT and every symbol in use
    pms streamer --symbols BTCUSDT,SOLUSDT    # these plus every symbol in use (Postgres)
"""

from __future__ import annotations

import argparse
import asyncio
import signal
from typing import Any

from pms.config import load_settings
from pms.logging import configure_logging, get_logger


def register(sub: Any) -> None:
    parser: argparse.ArgumentParser = sub.add_parser(
        "streamer",
        help="run the market and user-data streams (price/book cache, fills)",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument(
        "--symbols",
        default=None,
        help="comma-separated symbols always streamed (default: BTC/USDT:USDT,ETH/USDT:USDT)",
    )
    parser.add_argument(
        "--no-user-stream", action="store_true", help="market data only (no listen key)"
    )
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from streamer.app import DEFAULT_SYMBOLS, Streamer, StreamerConfig, parse_symbols

    settings = load_settings()
    configure_logging(settings, process="streamer")
    symbols = parse_symbols(args.symbols) if args.symbols else DEFAULT_SYMBOLS
    config = StreamerConfig(symbols=symbols, user_stream=not args.no_user_stream)
    streamer = Streamer(settings, config)

    async def main() -> None:
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(sig, stop.set)
        await streamer.run(stop)

    asyncio.run(main())
    get_logger(__name__).info("streamer exited")
    return 0
