"""The newest read of a book wins, whichever thread installs it last.

The pass thread re-reads every book now and then (``load_all``) while the change thread
reloads the accounts a booking named (``reload``). A full read that began before a reload's
read but was installed after it used to put the older book back: an account whose position
had just been closed kept being evaluated on the long (and one just opened stayed invisible to
the risk pass) until the next event or the next full reload, 30 s later. Real Postgres and
simulator; the other thread's work is run inside the read, where it would interleave.
"""

from __future__ import annotations

from decimal import Decimal
from typing import Any

import pytest

from pms.riskengine import monitor as monitor_module
from tests.riskengine.conftest import Harness
from tests.trading.conftest import BTC


def test_a_full_read_does_not_put_back_an_older_book(
    harness: Harness, monkeypatch: pytest.MonkeyPatch
) -> None:
    h = harness
    t = h.open_long("1000", "0.01", 10)
    sub = t.sub_account_id
    assert sub in h.monitor.books
    read_all = monitor_module.load_books

    def slow_full_read(session: Any, ids: Any) -> Any:
        books = read_all(session, ids)  # the long is in this read
        h.close_position(t)  # meanwhile the position is closed...
        h.monitor.reload([sub])  # ...and the change thread reloads the account: flat
        return books

    monkeypatch.setattr(monitor_module, "load_books", slow_full_read)
    h.monitor.load_all()

    assert sub not in h.monitor.books  # the reload's read is the newer one


def test_a_reload_does_not_put_back_an_older_book(
    harness: Harness, monkeypatch: pytest.MonkeyPatch
) -> None:
    h = harness
    t = h.open_long("1000", "0.01", 10)
    sub = t.sub_account_id
    read_some = monitor_module.load_books_now

    def slow_reload_read(connection: Any, ids: Any) -> Any:
        books = read_some(connection, ids)  # the long is in this read
        h.close_position(t)
        h.monitor.load_all()  # the pass thread's full read, begun and installed meanwhile
        return books

    monkeypatch.setattr(monitor_module, "load_books_now", slow_reload_read)
    h.monitor.reload([sub])

    assert sub not in h.monitor.books


def test_a_reload_after_a_full_read_is_installed(harness: Harness) -> None:
    """In the usual order nothing is kept back: each read installs its book."""
    h = harness
    t = h.open_long("1000", "0.01", 10)
    sub = t.sub_account_id
    h.monitor.load_all()
    h.close_position(t)
    h.monitor.reload([sub])
    assert sub not in h.monitor.books
    again = h.open_long("1000", "0.02", 10)  # load_all inside
    h.monitor.reload([again.sub_account_id])
    assert h.monitor.books[again.sub_account_id].positions[BTC].qty == Decimal("0.02")
