"""The risk document's fast path is byte-identical to the reference, and its cache follows
the book: ``DocumentPass`` against ``orjson.dumps(snapshot_payload(compute_snapshot(...)))``."""

from __future__ import annotations

from collections.abc import Mapping
from decimal import Decimal

import orjson
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from pms.domain.enums import AccountStatus, LiquidationMode, Side, Tier
from pms.domain.instrument import Instrument
from pms.risk.snapshot import OpenOrder, RiskPosition, compute_snapshot
from pms.risk.tiers import DEFAULT_THRESHOLDS
from pms.riskengine.books import AccountBook
from pms.riskengine.document import DocumentPass, prepare
from pms.riskengine.monitor import snapshot_payload
from tests.risk.builders import BTC, ETH, instrument

D = Decimal
ODD = "币安人生/USDT:USDT"  # a real Binance symbol that is not ASCII
INSTRUMENTS: Mapping[str, Instrument] = {s: instrument(s) for s in (BTC, ETH, ODD)}
SYMBOLS = tuple(INSTRUMENTS)


def scaled(low: int, high: int, places: int) -> st.SearchStrategy[Decimal]:
    return st.integers(low, high).map(lambda n: D(n).scaleb(-places))


positions = st.builds(
    RiskPosition,
    st.sampled_from(SYMBOLS),
    scaled(-20_000_000, 20_000_000, 3) | st.just(D(0)),  # up to ±20,000, and flat
    scaled(1, 2_000_000, 1),
    st.integers(1, 125),
)
orders = st.builds(
    OpenOrder,
    st.sampled_from(SYMBOLS),
    st.sampled_from(Side),
    scaled(0, 50_000, 3),
    st.none() | scaled(1, 2_000_000, 1),
    st.integers(1, 125),
    st.booleans(),
)
books = st.builds(
    lambda i, wallet, status, held, working: AccountBook(
        i,
        wallet,
        status,
        Tier.NORMAL,
        LiquidationMode.CLOSE,
        DEFAULT_THRESHOLDS,
        {p.symbol: p for p in held},
        working,
    ),
    st.integers(1, 10**9),
    scaled(-(10**8), 10**11, 2) | st.just(D(0)),
    st.sampled_from(AccountStatus),
    st.lists(positions, max_size=4),
    st.lists(orders, max_size=3),
)
marks = st.fixed_dictionaries({s: scaled(0, 2_000_000, 2) for s in SYMBOLS})


def reference(book: AccountBook, at: Mapping[str, Decimal], tier: Tier, ts: int) -> bytes:
    snap = compute_snapshot(book.wallet, book.positions.values(), book.orders, at, INSTRUMENTS)
    return orjson.dumps(snapshot_payload(book.sub_account_id, book, snap, tier, ts))


def fast(book: AccountBook, at: Mapping[str, Decimal], tier: Tier, ts: int) -> bytes:
    docs = DocumentPass(at, INSTRUMENTS, ts)
    return docs.document(docs.figures(book), tier).encode()


@settings(max_examples=400, deadline=None)
@given(books, marks, st.sampled_from(Tier), st.integers(0, 2**53))
def test_fast_document_is_byte_identical_to_the_reference(
    book: AccountBook, at: dict[str, Decimal], tier: Tier, ts: int
) -> None:
    try:
        expected = reference(book, at, tier, ts)
    except ArithmeticError as exc:  # e.g. a ratio too large to quantise: the same error
        with pytest.raises(type(exc)):
            fast(book, at, tier, ts)
        return
    assert fast(book, at, tier, ts) == expected
    assert fast(book, at, tier, ts) == expected  # and again, from the prepared parts


@settings(max_examples=100, deadline=None)
@given(books, marks, marks, st.data())
def test_prepared_parts_follow_the_book(
    book: AccountBook, first: dict[str, Decimal], then: dict[str, Decimal], data: st.DataObject
) -> None:
    fast(book, first, Tier.NORMAL, 1)  # prepares the book
    prepared = prepare(book)
    edit = data.draw(st.sampled_from(("position", "wallet", "status", "none")))
    if edit == "position":
        moved = data.draw(positions)
        book.positions[moved.symbol] = moved
    elif edit == "wallet":
        book.wallet += data.draw(scaled(1, 10**6, 2))
    elif edit == "status":
        book.status = data.draw(st.sampled_from(AccountStatus))
    assert fast(book, then, Tier.WARNING, 2) == reference(book, then, Tier.WARNING, 2)
    if edit == "none":
        assert prepare(book) is prepared  # nothing changed: nothing rebuilt


def test_a_position_edit_shows_in_the_next_document() -> None:
    held = RiskPosition(BTC, D("0.5"), D(60_000), 20)
    book = AccountBook(
        7, D(1000), AccountStatus.ACTIVE, Tier.NORMAL, LiquidationMode.CLOSE, DEFAULT_THRESHOLDS
    )
    book.positions[BTC] = held
    at = {BTC: D(61_000)}
    before = orjson.loads(fast(book, at, Tier.NORMAL, 1))
    book.positions[BTC] = RiskPosition(BTC, D("-0.25"), D(59_000), 10)
    after = orjson.loads(fast(book, at, Tier.NORMAL, 1))
    assert before["positions"][0]["qty"] == "0.5" and after["positions"][0]["qty"] == "-0.25"
    assert after["positions"][0]["entry"] == "59000" and after["positions"][0]["leverage"] == 10
    assert after["upnl"] == "-500.00"


def test_a_held_symbol_without_a_mark_raises_like_the_reference() -> None:
    book = AccountBook(
        7, D(1000), AccountStatus.ACTIVE, Tier.NORMAL, LiquidationMode.CLOSE, DEFAULT_THRESHOLDS
    )
    book.positions[ETH] = RiskPosition(ETH, D(1), D(3000), 5)
    with pytest.raises(ValueError):
        reference(book, {BTC: D(60_000)}, Tier.NORMAL, 1)
    with pytest.raises(ValueError):
        fast(book, {BTC: D(60_000)}, Tier.NORMAL, 1)
