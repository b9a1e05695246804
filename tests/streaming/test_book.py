"""The local book procedure (snapshot + U/u/pu), pure: no network."""

from __future__ import annotations

from decimal import Decimal as D

from pms.streaming.book import Applied, BookView, DepthDiff, LocalBook


def diff(
    first: int,
    last: int,
    prev: int,
    bids: list[tuple[str, str]] = (),
    asks: list[tuple[str, str]] = (),
) -> DepthDiff:  # type: ignore[assignment]
    return DepthDiff(
        "BTCUSDT", first, last, prev,
        tuple((D(p), D(q)) for p, q in bids), tuple((D(p), D(q)) for p, q in asks), last,
    )  # fmt: skip


SNAP_BIDS = [(D("100"), D("1")), (D("99"), D("2"))]
SNAP_ASKS = [(D("101"), D("1")), (D("102"), D("3"))]


def test_buffered_diffs_bridge_the_snapshot_and_old_ones_are_dropped() -> None:
    book = LocalBook("BTCUSDT", "BTC/USDT:USDT")
    assert book.on_diff(diff(1, 5, 0, bids=[("98", "9")])) is Applied.BUFFERED  # u < 10: dropped
    assert book.on_diff(diff(6, 12, 5, bids=[("100", "0")])) is Applied.BUFFERED  # straddles 10
    assert book.on_diff(diff(13, 14, 12, asks=[("101", "4")])) is Applied.BUFFERED

    assert book.apply_snapshot(10, SNAP_BIDS, SNAP_ASKS)

    assert book.live and book.last_id == 14
    bids, asks = book.top()
    assert bids == [(D("99"), D("2"))]  # 100 removed by qty 0; 98 came from a dropped diff
    assert asks == [(D("101"), D("4")), (D("102"), D("3"))]


def test_snapshot_older_than_every_buffered_diff_is_refused() -> None:
    book = LocalBook("BTCUSDT", "BTC/USDT:USDT")
    book.on_diff(diff(20, 25, 19))
    assert not book.apply_snapshot(10, SNAP_BIDS, SNAP_ASKS)
    assert not book.live


def test_gap_takes_the_book_offline() -> None:
    book = LocalBook("BTCUSDT", "BTC/USDT:USDT")
    assert book.apply_snapshot(10, SNAP_BIDS, SNAP_ASKS)
    assert book.on_diff(diff(11, 12, 10, bids=[("100", "5")])) is Applied.APPLIED
    assert book.on_diff(diff(11, 12, 10)) is Applied.STALE  # a replay
    assert book.on_diff(diff(14, 15, 13)) is Applied.GAP  # pu 13 != last u 12
    assert not book.live and not book.publishable and book.resyncs == 1


def test_first_diff_after_a_bare_snapshot_must_straddle_it() -> None:
    book = LocalBook("BTCUSDT", "BTC/USDT:USDT")
    assert book.apply_snapshot(10, SNAP_BIDS, SNAP_ASKS)
    assert book.on_diff(diff(8, 11, 7)) is Applied.APPLIED  # U <= 10 <= u

    other = LocalBook("BTCUSDT", "BTC/USDT:USDT")
    other.apply_snapshot(10, SNAP_BIDS, SNAP_ASKS)
    assert other.on_diff(diff(15, 16, 14)) is Applied.GAP  # skipped 11..14


def test_crossed_book_is_not_publishable_and_view_renders_top_levels() -> None:
    book = LocalBook("BTCUSDT", "BTC/USDT:USDT")
    book.apply_snapshot(10, SNAP_BIDS, SNAP_ASKS)
    assert book.publishable
    assert BookView(book).render().startswith(b'{"symbol":"BTC/USDT:USDT","bids":[["100","1"]')
    book.on_diff(diff(11, 11, 10, bids=[("101.5", "1")]))
    assert book.crossed() and not book.publishable
