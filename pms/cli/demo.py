"""``pms demo``: a narrated scenario against a running system (start it with ``pms up``).

Three sub-accounts are created and funded through gateway commands; carol trades at market
and with a limit order that a price move fills; alice (liquidation mode close) and bob
(takeover) take 50x longs, get a margin call as BTC falls, and are liquidated. A summary table
of balances, positions, PnL and events follows. Exit code 0 only if every step happened.

    pms demo            # narrated, then the table
    pms demo --json     # narration on stderr, the summary as JSON on stdout
"""

from __future__ import annotations

import argparse
import sys
import time
from typing import Any

import orjson

from pms.config import load_settings


def register(sub: Any) -> None:
    parser: argparse.ArgumentParser = sub.add_parser(
        "demo",
        help="a narrated trading and liquidation scenario against a running system",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--json", action="store_true", help="print the summary as JSON")
    parser.add_argument("--timeout", type=float, default=30.0, help="seconds per step")
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from pms.demo.client import DemoError
    from pms.demo.scenario import Scenario
    from pms.demo.summary import render

    settings = load_settings()
    out = sys.stderr if args.json else sys.stdout
    scenario = Scenario(settings, out, timeout=args.timeout)
    try:
        rows = scenario.run()
    except DemoError:
        out.write("demo FAILED: the step above did not happen as narrated\n")
        return 1
    finally:
        scenario.close()
    took = time.monotonic() - scenario.started
    out.write(f"\nAll {scenario.STEPS} steps happened as narrated in {took:.1f} s.\n\n")
    if args.json:
        sys.stdout.write(orjson.dumps({"accounts": rows}).decode() + "\n")
    else:
        out.write(render(rows) + "\n")
    return 0
