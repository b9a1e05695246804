"""The risk pass: on every mark change, re-evaluate the sub-accounts that hold the symbol.

Writes ``pms:risk:{subAccountId}`` (one pipelined round trip per pass), publishes
``risk_update`` when something material changed, and asks the ``pms.risk`` queue to enforce
the account's tier whenever its tier changes (and again, at most once a second, while it
stays in an ADL or liquidation tier). Enforcement re-checks everything from Postgres; the
monitor only decides *when* to look, never *what* to do.

Books are kept in memory and reloaded when the account changes (``position_update``,
``balance_update``, ``order_update`` events), so the hot path does no database work; the
document itself is computed and rendered by :mod:`pms.riskengine.document`.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from decimal import Decimal
from typing import Any

import orjson
import redis
import structlog
from sqlalchemy.orm import Session, sessionmaker

from pms.clock import Clock
from pms.db.session import unit_of_work
from pms.domain.enums import AccountStatus, Tier
from pms.domain.instrument import Instrument
from pms.marketdata.prices import parse_price, price_key
from pms.messaging import resp
from pms.messaging.events import EventPublisher, EventType
from pms.risk.margin import RATIO_BEYOND_LIQUIDATION
from pms.risk.snapshot import RiskSnapshot
from pms.risk.tiers import classify_tier
from pms.riskengine.books import AccountBook, active_account_ids, load_books, load_books_now
from pms.riskengine.document import RATIO_PLACES, DocumentPass, prepare
from pms.riskengine.reduce_only import has_uncovered

log = structlog.get_logger(__name__)

RISK_KEY = "pms:risk:"
MATERIAL_RATIO_MOVE = Decimal("0.01")
REENFORCE_MS = 1_000
# How old a streamer's price record may be to seed a mark the pass has not heard yet (the
# price service's own staleness limit).
SEED_MAX_AGE_MS = 5_000
WRITE_SLICE = 100  # snapshots per MSET: ~100 kB, under malloc's mmap threshold
_REENFORCED = frozenset(t for t in Tier if t.severity >= Tier.ADL1.severity)
WATCHED_EVENTS = (EventType.POSITION_UPDATE, EventType.BALANCE_UPDATE, EventType.ORDER_UPDATE)
# How long the change feed gathers events before it reloads the accounts they name.
RELOAD_WINDOW_S = 0.02
Enqueue = Callable[[int, str], None]


def _s(value: Decimal | None) -> str | None:
    return None if value is None else str(value)


def snapshot_payload(
    sub_account_id: int,
    book: AccountBook,
    snap: RiskSnapshot,
    tier: Tier,
    ts: int,
    marks: dict[str, str] | None = None,
) -> dict[str, Any]:
    """The ``pms:risk:{id}`` document, written plainly: the definition of its content.

    The risk pass renders the same bytes faster with :mod:`pms.riskengine.document`, and
    ``tests/riskengine/test_document.py`` holds the two to byte equality. ``marks`` caches
    each symbol's mark string across calls."""
    ratio = snap.margin_ratio
    mark_text = marks if marks is not None else {}
    positions = []
    for p in snap.positions:
        mark = mark_text.get(p.symbol)
        if mark is None:
            mark = mark_text[p.symbol] = str(p.mark)
        positions.append(
            {
                "symbol": p.symbol,
                "qty": str(p.qty),
                "entry": str(p.entry),
                "mark": mark,
                "upnl": str(p.upnl),
                "notional": str(p.notional),
                "leverage": p.leverage,
                "liqPrice": _s(p.liq_price),
            }
        )
    return {
        "subAccountId": sub_account_id,
        "wallet": str(snap.wallet),
        "equity": str(snap.equity),
        "upnl": str(snap.upnl),
        "initialMargin": str(snap.initial_margin),
        "maintenanceMargin": str(snap.maintenance_margin),
        # Equity at or below zero has no finite ratio; it is beyond liquidation.
        "marginRatio": "Infinity"
        if ratio == RATIO_BEYOND_LIQUIDATION
        else str(ratio.quantize(RATIO_PLACES)),
        "available": str(snap.available),
        "tier": tier.value,
        "status": book.status.value,
        "positions": positions,
        "ts": ts,
    }


def _reenforced(tier: Tier, book: AccountBook) -> bool:
    """Enforcement is asked again every second while the account is past ADL1, or while it
    is LIQUIDATING whatever its tier (a liquidation runs to the end: one that failed, or was
    held back, must be taken up again even after the price recovered)."""
    return tier in _REENFORCED or book.status is AccountStatus.LIQUIDATING


def _moved(ratio: Decimal, before: Decimal) -> bool:
    """A material move of the margin ratio (either side may be the infinite ratio of an
    account whose equity is gone)."""
    if not ratio.is_finite() or not before.is_finite():
        return ratio != before
    return abs(ratio - before) >= MATERIAL_RATIO_MOVE


@dataclass
class _Seen:
    tier: Tier
    ratio: Decimal
    enforced_at: int = 0


class RiskMonitor:
    def __init__(
        self,
        client: redis.Redis,
        sessions: sessionmaker[Session],
        instruments: Callable[[], Mapping[str, Instrument]],
        events: EventPublisher,
        clock: Clock,
        enqueue: Enqueue,
        *,
        prefix: str = "",
    ) -> None:
        self._client = client
        self._sessions = sessions
        self._instruments = instruments
        self._events = events
        self._clock = clock
        self._enqueue = enqueue
        self._prefix = prefix
        self._lock = threading.RLock()
        self.books: dict[int, AccountBook] = {}
        self.by_symbol: dict[str, set[int]] = {}
        self.marks: dict[str, Decimal] = {}
        self._seen: dict[int, _Seen] = {}
        self._key_frames: dict[int, str] = {}  # sub-account id -> its key as a RESP bulk string
        self._unpriced: set[int] = set()  # accounts skipped for a missing mark (logged once)
        self._trims: dict[int, int] = {}  # sub-account -> when (ms) its trim was last asked
        # Which read each book came from (see load_all and reload): the
        # last ticket drawn, the last full read's, and each account's later reload's.
        self._ticket = 0
        self._full_at = 0
        self._read_at: dict[int, int] = {}

    # -- books ------------------------------------------------------------------------------

    def load_all(self) -> int:
        """Re-read every active account. A book some reload read after this read began is
        kept: the newest read wins, whichever thread installs last (this runs on the pass
        thread and on the change thread's (re)subscription, reloads on the change thread)."""
        ticket = self._take_ticket()
        with unit_of_work(self._sessions) as s:
            books = load_books(s, active_account_ids(s))
        with self._lock:
            newer = {i for i, t in self._read_at.items() if t > ticket}
            merged = {i: b for i, b in books.items() if i not in newer}
            merged.update({i: self.books[i] for i in newer if i in self.books})
            self._full_at = ticket
            self._read_at = {i: t for i, t in self._read_at.items() if t > ticket}
            self.install(merged.values())
        return len(merged)

    def install(self, books: Iterable[AccountBook]) -> None:
        """Replace every book (start-up, or a benchmark's synthetic accounts)."""
        with self._lock:
            self.books = {b.sub_account_id: b for b in books}
            self.by_symbol = {}
            for book in self.books.values():
                self._index(book)
                self._seen.setdefault(book.sub_account_id, _Seen(book.tier, Decimal(0)))
            self._seed_marks(self.by_symbol.keys())

    def _take_ticket(self) -> int:
        """A number for a read about to begin: a later read has a larger one."""
        with self._lock:
            self._ticket += 1
            return self._ticket

    def reload(self, ids: Iterable[int]) -> None:
        """Re-read these accounts (after a fill, a deposit, an order) and re-evaluate them.
        An account whose book came from a read that began after this one keeps it."""
        wanted = set(ids)
        ticket = self._take_ticket()
        engine = self._sessions.kw["bind"]
        with engine.connect() as connection:  # one statement, no transaction around it
            loaded = load_books_now(connection, wanted)
        with self._lock:
            fresh = {
                i: loaded.get(i)
                for i in wanted
                if max(self._read_at.get(i, 0), self._full_at) < ticket
            }
            flat: dict[int, AccountBook] = {}
            for sub_account_id, book in fresh.items():
                self._read_at[sub_account_id] = ticket
                self._unindex(sub_account_id)
                if book is None:
                    self.books.pop(sub_account_id, None)
                    continue
                self.books[sub_account_id] = book
                self._seen.setdefault(sub_account_id, _Seen(book.tier, Decimal(0)))
                if not book.symbols:
                    # Evaluated once more before it goes (its ratio is 0): an account closed
                    # out of RESTRICTED or WARNING must have that tier change enforced (its
                    # status restored) and its risk document rewritten.
                    flat[sub_account_id] = book
                    continue
                self._index(book)
            self._seed_marks({s for b in fresh.values() if b for s in b.symbols})
            present = [i for i in wanted if i in self.books]
        if present:
            self._evaluate(present)
        if flat:
            with self._lock:
                for sub_account_id, book in flat.items():
                    if self.books.get(sub_account_id) is book:  # not replaced meanwhile
                        del self.books[sub_account_id]
        self._ask_trims(wanted)

    def _ask_trims(self, ids: Iterable[int]) -> None:
        """Ask enforcement to cancel the reduce-only orders a smaller position no longer
        covers (:mod:`pms.riskengine.reduce_only`): when a book shows some, and again at most
        every :data:`REENFORCE_MS` while it still does (``revisit``), so a cancel that failed
        is retried and one that is still on its way is not asked twice at once."""
        now = self._clock.ms()
        asks = []
        with self._lock:
            for sub_account_id in ids:
                book = self.books.get(sub_account_id)
                if book is None or not has_uncovered(book):
                    self._trims.pop(sub_account_id, None)
                    continue
                last = self._trims.get(sub_account_id)
                if last is None or now - last >= REENFORCE_MS:
                    self._trims[sub_account_id] = now
                    asks.append(sub_account_id)
        for sub_account_id in asks:
            log.info(
                "reduce-only orders exceed the position: enforcing", subAccountId=sub_account_id
            )
            self._enqueue(sub_account_id, "reduce-only orders exceed the position")

    def _index(self, book: AccountBook) -> None:
        prepare(book)  # its document's fixed parts, now rather than on the next mark tick
        for symbol in book.symbols:
            self.by_symbol.setdefault(symbol, set()).add(book.sub_account_id)

    def _unindex(self, sub_account_id: int) -> None:
        book = self.books.get(sub_account_id)
        if book is None:
            return
        for symbol in book.symbols:
            holders = self.by_symbol.get(symbol)
            if holders is not None:
                holders.discard(sub_account_id)

    def _seed_marks(self, symbols: Iterable[str]) -> None:
        """Marks for symbols the pass has not heard yet, from the streamer's records: only a
        fresh one (at most :data:`SEED_MAX_AGE_MS` old). An older record is a mark nobody
        streams any more (a streamer restarting, a symbol subscribed again): judged on it, an
        account could be sent to enforcement for a price long gone; it waits for a live one."""
        missing = [s for s in symbols if s not in self.marks]
        if not missing:
            return
        now = self._clock.ms()
        raws = self._client.mget([price_key(self._prefix, s) for s in missing])
        for symbol, raw in zip(missing, raws, strict=True):
            if raw is None:
                continue
            view = parse_price(symbol, raw)
            if now - view.ts <= SEED_MAX_AGE_MS:
                self.marks[symbol] = view.mark

    # -- the pass ---------------------------------------------------------------------------

    def on_marks(self, marks: Mapping[str, Decimal]) -> int:
        """New marks arrived; re-evaluate every holder of a changed symbol. Returns how many."""
        with self._lock:
            changed = [s for s, m in marks.items() if self.marks.get(s) != m]
            self.marks.update(marks)
            affected: set[int] = set()
            for symbol in changed:
                affected |= self.by_symbol.get(symbol, set())
        return self._evaluate(affected) if affected else 0

    def _evaluate(self, ids: Iterable[int]) -> int:
        now = self._clock.ms()
        docs = DocumentPass(self.marks, self._instruments(), now)
        writes: list[tuple[int, str]] = []
        updates: list[tuple[EventType, int, orjson.Fragment]] = []
        to_enforce: list[tuple[int, str]] = []
        normal = Tier.NORMAL
        unpriced = self._unpriced
        with self._lock:
            for sub_account_id in ids:
                book = self.books.get(sub_account_id)
                if book is None:
                    continue
                try:
                    figures = docs.figures(book)
                except ValueError as exc:
                    # A held symbol, or a working market order's, without a mark yet: wait
                    # for it rather than guess; said once, not on every tick until it comes.
                    if sub_account_id not in unpriced:
                        unpriced.add(sub_account_id)
                        log.warning(
                            "risk pass skips account until its marks arrive",
                            subAccountId=sub_account_id,
                            reason=str(exc),
                        )
                    continue
                except Exception:
                    # One bad book must not blind the monitor to every other account.
                    log.exception("risk snapshot failed", subAccountId=sub_account_id)
                    continue
                if unpriced:
                    unpriced.discard(sub_account_id)
                seen = self._seen[sub_account_id]
                ratio = figures[0]
                if seen.tier is normal and ratio < book.thresholds.warning:
                    tier = normal  # what classify_tier says from NORMAL below WARNING, faster
                else:
                    tier = classify_tier(seen.tier, ratio, book.thresholds)
                document = docs.document(figures, tier)
                writes.append((sub_account_id, document))
                if tier is not seen.tier:
                    to_enforce.append((sub_account_id, f"tier {seen.tier.value} -> {tier.value}"))
                    seen.enforced_at = now
                elif _reenforced(tier, book) and now - seen.enforced_at >= REENFORCE_MS:
                    to_enforce.append((sub_account_id, f"still {tier.value}"))
                    seen.enforced_at = now
                if tier is not seen.tier or _moved(ratio, seen.ratio):
                    # The document as it was rendered, not parsed back into a dict to be
                    # written again: the event's data is the stored document, byte for byte.
                    updates.append(
                        (EventType.RISK_UPDATE, sub_account_id, orjson.Fragment(document))
                    )
                    seen.ratio = ratio
                seen.tier = tier
        # Enforcement first: it is the latency that matters (a liquidation waits on it);
        # snapshots and events follow in the same pass.
        for sub_account_id, reason in to_enforce:
            log.info("risk tier change: enforcing", subAccountId=sub_account_id, reason=reason)
            self._enqueue(sub_account_id, reason)
        if writes:
            self._write(writes)
        if updates:
            self._events.publish_many(updates)
        return len(writes)

    def _key(self, sub_account_id: int) -> str:
        return f"{self._prefix}{RISK_KEY}{sub_account_id}"

    def _write(self, writes: list[tuple[int, str]]) -> None:
        """Store the pass's documents: MSETs of ``WRITE_SLICE`` keys, framed here and sent
        back to back on one connection, then their replies read (one round trip).

        Why not ``client.mset``: packing one 2 MB command costs more than building it (its
        buffers are fresh mmaps every pass, each page a fault), and redis-py encodes and
        re-copies every argument. Slices of ~100 kB stay on the heap, and Redis stores the
        first while the next is framed. A dropped connection (Redis restarted) falls back to
        the client's own path, which reconnects and retries.
        """
        try:
            self._send_framed(writes)
        except (redis.ConnectionError, redis.TimeoutError):
            log.warning("risk snapshot write failed; retrying through the client")
            pipe = self._client.pipeline(transaction=False)
            for start in range(0, len(writes), WRITE_SLICE):
                chunk = writes[start : start + WRITE_SLICE]
                pipe.mset({self._key(i): document.encode() for i, document in chunk})
            pipe.execute()

    def _send_framed(self, writes: list[tuple[int, str]]) -> None:
        slices = range(0, len(writes), WRITE_SLICE)
        resp.round_trip(
            self._client, (self._mset(writes[i : i + WRITE_SLICE]) for i in slices), len(slices)
        )

    def _mset(self, chunk: list[tuple[int, str]]) -> bytes:
        key_frames = self._key_frames
        frames = [f"*{2 * len(chunk) + 1}\r\n$4\r\nMSET\r\n"]
        for sub_account_id, document in chunk:
            key = key_frames.get(sub_account_id)
            if key is None:
                key = key_frames[sub_account_id] = resp.bulk(self._key(sub_account_id))
            frames.append(f"{key}{resp.bulk(document)}")
        return "".join(frames).encode()

    def revisit(self) -> int:
        """Re-evaluate accounts in an ADL or liquidation tier, or LIQUIDATING, even if no mark
        moved: their enforcement is asked for again (at most once a second) until they are out
        of it. The same for books still showing uncovered reduce-only orders."""
        with self._lock:
            books = self.books
            ids = [
                i
                for i, seen in self._seen.items()
                if i in books and _reenforced(seen.tier, books[i])
            ]
            trims = list(self._trims)
        if trims:
            self._ask_trims(trims)
        return self._evaluate(ids) if ids else 0

    # -- change feed ------------------------------------------------------------------------

    def follow_changes(
        self, stop: threading.Event, on_subscribed: Callable[[], object] | None = None
    ) -> None:
        """Reload accounts named by booking/order/balance events, and by the signal of a
        change to an account's rules or status (``RISK_INPUTS_CHANNEL``), until ``stop`` is set.

        ``on_subscribed`` runs once the subscription is sent, before the first event is
        read: the place to catch up on what was published while nothing listened (the feed
        reloads every book there); a change it reads too early to see comes as an event."""
        pubsub = self._client.pubsub(ignore_subscribe_messages=True)  # type: ignore[no-untyped-call]
        pubsub.subscribe(
            *(self._events.channel(t) for t in WATCHED_EVENTS), self._events.risk_inputs_channel
        )
        try:
            if on_subscribed is not None:
                on_subscribed()
            while not stop.is_set():
                message = pubsub.get_message(timeout=0.2)
                if message is None:
                    continue
                ids = {int(orjson.loads(message["data"]).get("subAccountId") or 0)}
                # Gather what comes within RELOAD_WINDOW_S (a booking's events, the fills of
                # other accounts) so a burst costs one reload of each account, in one query
                # per table.
                deadline = time.monotonic() + RELOAD_WINDOW_S
                while (left := deadline - time.monotonic()) > 0:
                    more = pubsub.get_message(timeout=left)
                    if more is not None:
                        ids.add(int(orjson.loads(more["data"]).get("subAccountId") or 0))
                ids.discard(0)
                if ids:
                    self.reload(ids)
        finally:
            pubsub.close()
