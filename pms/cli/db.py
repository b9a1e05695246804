"""``pms db upgrade|downgrade|current``: Alembic migrations against PMS_DATABASE_URL."""

from __future__ import annotations

import argparse

from pms.config import load_settings
from pms.db import migrate


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    parser = sub.add_parser("db", help="database migrations")
    db_sub = parser.add_subparsers(dest="db_command", metavar="ACTION")
    db_sub.required = True
    up = db_sub.add_parser("upgrade", help="create the database if needed and migrate to head")
    up.add_argument("revision", nargs="?", default="head")
    up.set_defaults(func=_upgrade)
    down = db_sub.add_parser("downgrade", help="migrate down (default: to base, dropping all)")
    down.add_argument("revision", nargs="?", default="base")
    down.set_defaults(func=_downgrade)
    cur = db_sub.add_parser("current", help="print the current revision")
    cur.set_defaults(func=_current)


def _upgrade(args: argparse.Namespace) -> int:
    settings = load_settings()
    migrate.upgrade(settings, args.revision)
    print(f"database at revision {migrate.current(settings)}")
    return 0


def _downgrade(args: argparse.Namespace) -> int:
    settings = load_settings()
    migrate.downgrade(settings, args.revision)
    print(f"database at revision {migrate.current(settings) or 'base'}")
    return 0


def _current(_args: argparse.Namespace) -> int:
    print(migrate.current(load_settings()) or "base")
    return 0
