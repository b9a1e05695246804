"""``pms order resync ID --since TIME``: settle an order order-sync reported ``unbooked``.

Order-sync leaves open an order the exchange closed with more filled than it could book (the
trades are not in the trade history it reads: see docs/operations.md, *Inspecting stuck
jobs*). This reads the order's trades from ``--since`` to now in the windows Binance allows,
books each once, and closes the order once every fill it implies is booked. Exit 0 when the
order is settled (or nothing was left to do), 1 when something is still missing.
"""

from __future__ import annotations

import argparse
import json
import sys
from datetime import UTC, datetime
from typing import Any

from pms.domain.numbers import ascii_digits


def _order_id(text: str) -> int:
    if not ascii_digits(text) or len(text) > 18:
        raise argparse.ArgumentTypeError(f"not an order id: {text!r}")
    return int(text)


def _since(text: str) -> datetime:
    try:
        when = datetime.fromisoformat(text)
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"not an ISO 8601 time: {text!r} (e.g. 2026-11-20T00:00:00Z)"
        ) from None
    if when.tzinfo is None:
        raise argparse.ArgumentTypeError(f"give a time zone: {text!r} (e.g. ...Z or +00:00)")
    return when.astimezone(UTC)


def register(sub: Any) -> None:
    parser = sub.add_parser("order", help="operator repairs of one order")
    actions = parser.add_subparsers(dest="order_command", metavar="ACTION")
    actions.required = True
    resync = actions.add_parser(
        "resync",
        help="book an order's trades from a given time and settle it",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    resync.add_argument("id", type=_order_id, help="our order id (orderId)")
    resync.add_argument(
        "--since", type=_since, required=True, help="when its first fill may have happened"
    )
    resync.set_defaults(func=_resync)


def _resync(args: argparse.Namespace) -> int:
    from pms.app import build_app  # ccxt: slow to import, only for this command
    from pms.config import load_settings
    from pms.sync.orders import resync_order

    app = build_app(load_settings())
    try:
        if args.since > app.clock.now():
            print(
                f"pms order resync: error: --since {args.since.isoformat()} is in the future",
                file=sys.stderr,
            )
            return 2
        report = resync_order(app, args.id, args.since)
    finally:
        app.close()
    print(json.dumps(report.as_dict(), indent=2))
    return 1 if report.unbooked or report.errors else 0
