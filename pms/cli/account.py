"""``pms account create|deposit|withdraw|list|show``: operator access to sub-accounts."""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from decimal import Decimal
from typing import Any

import redis
from sqlalchemy.orm import Session

from pms.accounts import service
from pms.accounts.ledger import lock_account
from pms.clock import SystemClock
from pms.config import load_settings
from pms.db.session import check_database, make_engine, make_session_factory, unit_of_work
from pms.domain.numbers import ascii_digits, parse_decimal, to_wire
from pms.errors import ValidationError
from pms.execution.views import balance_change_view
from pms.logging import configure_logging
from pms.messaging.events import EventPublisher, EventType

MAX_LEDGER = 10_000


def _amount(text: str) -> Decimal:
    try:
        return parse_decimal(text, "amount")
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def _ledger_count(text: str) -> int:
    if not ascii_digits(text) or not 0 <= int(text) <= MAX_LEDGER:
        raise argparse.ArgumentTypeError(f"--ledger must be 0 to {MAX_LEDGER}: {text!r}")
    return int(text)


def _account_id(text: str) -> int:
    if not ascii_digits(text) or len(text) > 18:
        raise argparse.ArgumentTypeError(f"not a sub-account id: {text!r}")
    return int(text)


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    parser = sub.add_parser("account", help="create, fund and inspect sub-accounts")
    acc = parser.add_subparsers(dest="account_command", metavar="ACTION")
    acc.required = True

    create = acc.add_parser("create", help="create a sub-account")
    create.add_argument("--user", required=True, help="owner user id")
    create.add_argument("--name", required=True)
    create.add_argument("--json", action="store_true")
    create.set_defaults(func=_run(_create))

    for name, fn in (("deposit", _deposit), ("withdraw", _withdraw)):
        p = acc.add_parser(name, help=f"{name} USDT")
        p.add_argument("id", type=_account_id)
        p.add_argument("amount", type=_amount)
        p.add_argument("--json", action="store_true")
        p.set_defaults(func=_run(fn))

    lst = acc.add_parser("list", help="list sub-accounts")
    lst.add_argument("--user", help="only this owner's")
    lst.add_argument("--json", action="store_true")
    lst.set_defaults(func=_run(_list))

    show = acc.add_parser("show", help="balance and recent ledger of one sub-account")
    show.add_argument("id", type=_account_id)
    show.add_argument("--ledger", type=_ledger_count, default=20, help="ledger entries to show")
    show.add_argument("--json", action="store_true")
    show.set_defaults(func=_run(_show))


@contextmanager
def _session() -> Iterator[Session]:
    engine = make_engine(load_settings(), pool_size=1)
    check_database(engine)
    try:
        with unit_of_work(make_session_factory(engine)) as session:
            yield session
    finally:
        engine.dispose()


def _run(fn: Callable[[Session, argparse.Namespace], Any]) -> Callable[[argparse.Namespace], int]:
    def runner(args: argparse.Namespace) -> int:
        with _session() as session:
            output = fn(session, args)
        if "deposited" in output or "withdrawn" in output:
            _publish_balance(output)
        if args.json:
            print(json.dumps(output, indent=2))
        else:
            _print_human(output)
        return 0

    return runner


def _publish_balance(output: dict[str, Any]) -> None:
    """The ``balance_update`` every ledgered wallet change publishes (docs/events.md), once
    the move is committed: the gateway's clients and the risk monitor (it reloads the
    account's book on it) hear of an operator's deposit or withdrawal too."""
    settings = load_settings()
    configure_logging(settings, process="cli")  # logs to stderr: stdout is the command's output
    deposit = "deposited" in output
    change = Decimal(output["deposited"] if deposit else output["withdrawn"])
    data = balance_change_view(
        Decimal(output["balance"]),
        change if deposit else -change,
        "deposit" if deposit else "withdrawal",
    )
    client = redis.Redis.from_url(settings.redis_url)
    try:
        publisher = EventPublisher(client, SystemClock(), prefix=settings.redis_prefix)
        publisher.publish(EventType.BALANCE_UPDATE, output["subAccountId"], data)
    except redis.RedisError as exc:
        # The move is committed; only its event is lost (the monitor's full reload, every
        # 30 s, still sees the new balance).
        print(f"warning: balance_update not published: {exc}", file=sys.stderr)
    finally:
        client.close()


def _account_dict(a: service.AccountView) -> dict[str, Any]:
    return {
        "id": a.id,
        "name": a.name,
        "userId": a.owner_user_id,
        "status": a.status,
        "tier": a.tier,
        "house": a.is_house,
        "balance": to_wire(a.wallet_balance),
    }


def _create(session: Session, args: argparse.Namespace) -> dict[str, Any]:
    account = service.create_sub_account(session, args.user, args.name)
    return {"created": _account_dict(service.AccountView.of(account))}


def _deposit(session: Session, args: argparse.Namespace) -> dict[str, Any]:
    entry = service.deposit(session, args.id, args.amount)
    return {
        "subAccountId": args.id,
        "deposited": to_wire(args.amount),
        "balance": to_wire(entry.balance_after),
    }


def _withdraw(session: Session, args: argparse.Namespace) -> dict[str, Any]:
    """As the gateway's withdraw: an account holding positions or orders keeps what covers
    its unrealized loss at current marks (the streamer's, else the exchange's), not only its
    margin at entry; without a usable mark nothing moves."""
    from pms.app import build_app  # the exchange and prices: only a withdrawal needs them

    account = lock_account(session, args.id)
    app = build_app(load_settings())
    try:
        marked = app.accounts.available_at_marks(session, account)
    finally:
        app.close()
    entry = service.withdraw(session, args.id, args.amount, marked_available=marked)
    return {
        "subAccountId": args.id,
        "withdrawn": to_wire(args.amount),
        "balance": to_wire(entry.balance_after),
    }


def _list(session: Session, args: argparse.Namespace) -> dict[str, Any]:
    accounts = service.list_accounts(session, args.user)
    return {"accounts": [_account_dict(service.AccountView.of(a)) for a in accounts]}


def _show(session: Session, args: argparse.Namespace) -> dict[str, Any]:
    if args.ledger < 0:
        raise ValidationError("--ledger must not be negative")
    account = service.get_account(session, args.id)
    entries = service.ledger(session, args.id, args.ledger)
    return {
        "account": _account_dict(service.AccountView.of(account)),
        "ledger": [
            {
                "id": e.id,
                "kind": e.kind,
                "amount": to_wire(e.amount),
                "balanceAfter": to_wire(e.balance_after),
                "ref": f"{e.ref_type}:{e.ref_id}" if e.ref_type else None,
                "at": e.created_at.isoformat(),
            }
            for e in entries
        ],
    }


def _print_human(output: dict[str, Any]) -> None:
    if "accounts" in output:
        rows = output["accounts"]
        print(f"{'id':>6}  {'name':<20} {'user':<16} {'status':<11} {'balance':>18}")
        for r in rows:
            print(
                f"{r['id']:>6}  {r['name']:<20} {r['userId']:<16} {r['status']:<11} {r['balance']:>18}"
            )
        return
    if "account" in output:
        a = output["account"]
        print(
            f"sub-account {a['id']} {a['name']!r} (user {a['userId']}), {a['status']}, tier {a['tier']}"
        )
        print(f"balance {a['balance']} USDT")
        if output["ledger"]:
            print(f"{'entry':>8}  {'kind':<16} {'amount':>18} {'balance after':>18}  at")
            for e in output["ledger"]:
                print(
                    f"{e['id']:>8}  {e['kind']:<16} {e['amount']:>18} {e['balanceAfter']:>18}  {e['at']}"
                )
        return
    if "created" in output:
        c = output["created"]
        print(f"created sub-account {c['id']} {c['name']!r} for user {c['userId']}")
        return
    verb = "deposited" if "deposited" in output else "withdrew"
    amount = output.get("deposited") or output.get("withdrawn")
    print(
        f"sub-account {output['subAccountId']}: {verb} {amount}, balance {output['balance']} USDT"
    )
