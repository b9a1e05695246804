"""``pms api``: the control API (health, readiness, metrics, status, the Dramatiq dashboard).

pms api                          # 127.0.0.1:8888 (PMS_API_HOST / PMS_API_PORT)
pms api --host 0.0.0.0           # reachable from other machines: set PMS_API_TOKEN too
"""

from __future__ import annotations

import argparse
from typing import Any

from pms.config import load_settings
from pms.logging import configure_logging, get_logger


def _port(text: str) -> int:
    if not (text.isascii() and text.isdigit()) or not 1 <= int(text) <= 65535:
        raise argparse.ArgumentTypeError(f"--port must be 1 to 65535: {text!r}")
    return int(text)


def register(sub: Any) -> None:
    parser: argparse.ArgumentParser = sub.add_parser(
        "api",
        help="control API: /health /ready /metrics /status and the Dramatiq dashboard",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--host", default=None, help="default: PMS_API_HOST (127.0.0.1)")
    parser.add_argument("--port", type=_port, default=None, help="default: PMS_API_PORT (8888)")
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from pms.api.server import run as serve

    settings = load_settings()
    configure_logging(settings, process="api")
    host = args.host or settings.api_host
    port = settings.api_port if args.port is None else args.port
    if host not in ("127.0.0.1", "localhost", "::1") and not settings.api_token.get_secret_value():
        get_logger(__name__).warning("api bound beyond loopback without PMS_API_TOKEN", host=host)
    serve(settings, host, port)
    return 0
