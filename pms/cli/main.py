"""Entry point of the ``pms`` console script.

Each sub-command lives in its own module exposing ``register(subparsers)``; the module adds its
parser and sets ``func`` to a callable ``(args) -> int``. Settings are built here, once, and
handed down; an invalid setting stops start-up with one line naming the variable.
"""

from __future__ import annotations

import argparse
import importlib
import sys
from collections.abc import Sequence
from typing import NoReturn

from sqlalchemy.exc import OperationalError

from pms.errors import PmsError

# Sub-command modules, in the order they appear in ``pms --help``.
COMMAND_MODULES = (
    "pms.cli.db",
    "pms.cli.account",
    "pms.cli.order",
    "pms.sim.cli",
    "pms.cli.worker",
    "pms.cli.streamer",
    "pms.cli.scheduler",
    "pms.cli.api",
    "pms.cli.up",
    "pms.cli.demo",
)


class _Parser(argparse.ArgumentParser):
    """Bad arguments give one line on stderr (no usage dump) and exit code 2."""

    def error(self, message: str) -> NoReturn:
        self.exit(2, f"{self.prog}: error: {message}\n")


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(prog="pms", description="PMS trading engine for crypto perpetual futures.")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", parser_class=_Parser)
    sub.required = True
    for name in COMMAND_MODULES:
        importlib.import_module(name).register(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        code: int = args.func(args)
    except PmsError as exc:
        print(f"error: {exc.message}", file=sys.stderr)
        return 2
    except OperationalError as exc:
        # Postgres unreachable (a command that does not check first): one line, no password
        # (libpq's message names the host and port only).
        reason = str(exc.orig).strip().splitlines()[0] if exc.orig else "unreachable"
        print(f"error: the database is unreachable: {reason}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return 130
    return code


if __name__ == "__main__":
    sys.exit(main())
