"""The ``pms:risk:{id}`` document, computed and rendered in one go: the risk pass's hot path.

The reference is ``monitor.snapshot_payload(compute_snapshot(...))`` serialised by
``orjson.dumps``; this module produces the same bytes (tests hold it to that, property-based)
at a fraction of the cost, for 2,000 documents per mark tick (SPEC §10). How:

* what does not move with the marks is prepared once per book (:class:`PreparedBook`): each
  position's JSON head (symbol, qty, entry), its leverage tail, the account's head (id,
  wallet) and status; a book that is replaced or
  edited is prepared again (``prepare`` checks the wallet and status it was built from by
  identity, and its positions as a tuple: identical objects, or equal ones);
* what moves with a mark but is shared by every holder of the symbol is looked up once per
  pass (:class:`DocumentPass`): the mark, its JSON text, the bracket table;
* the rest is the same Decimal arithmetic, in the same order, as ``compute_snapshot``
  (its per-position figures inlined, no intermediate objects; the liquidation price from
  ``pms.risk.margin.liquidation_price`` itself), and its text is joined into the document
  directly.

Every number is ``str(Decimal)``, exactly what the reference writes; nothing is a float.
Like ``compute_snapshot``, the arithmetic runs in the caller's decimal context.
"""

from __future__ import annotations

from bisect import bisect_right
from collections.abc import Mapping
from decimal import Decimal
from typing import TYPE_CHECKING

import orjson

from pms.domain.enums import Tier
from pms.domain.instrument import Instrument
from pms.domain.numbers import ZERO
from pms.risk.margin import (
    RATIO_BEYOND_LIQUIDATION,
    BracketTable,
    bracket_table,
    liquidation_price,
    margin_ratio,
)
from pms.risk.snapshot import open_orders_margin

if TYPE_CHECKING:
    from pms.riskengine.books import AccountBook

RATIO_PLACES = Decimal("0.000001")

# One non-flat position, prepared: (qty, entry, leverage as a Decimal, JSON head up to the
# mark's opening quote, JSON tail from the leverage to the liqPrice key, symbol).
_Row = tuple[Decimal, Decimal, Decimal, str, str, str]

# JSON text of symbols and statuses: a handful of values, each written by orjson once.
_TEXTS: dict[str, str] = {}


def _text(value: str) -> str:
    """``value`` as orjson writes a string (quotes and any escapes included)."""
    text = _TEXTS.get(value)
    if text is None:
        text = _TEXTS[value] = orjson.dumps(value).decode()
    return text


def _int_text(value: int) -> str:
    return str(value) if type(value) is int else orjson.dumps(value).decode()


class PreparedBook:
    """The parts of a book's document that only change when the book does.

    ``str(Decimal)`` needs no JSON escaping (digits, sign, point, exponent, "Infinity"), so
    numbers are quoted as they are; strings go through orjson.
    """

    __slots__ = ("head", "held", "positions", "rows", "status", "status_text", "wallet")

    def __init__(self, book: AccountBook) -> None:
        self.wallet = book.wallet
        self.status = book.status
        self.positions = tuple(book.positions.values())
        self.head = (
            f'{{"subAccountId":{_int_text(book.sub_account_id)},"wallet":"{book.wallet!s}",'
            '"equity":"'
        )
        self.status_text = f'","status":{_text(book.status.value)},"positions":['
        rows: list[_Row] = []
        for pos in self.positions:
            qty = pos.qty
            if not qty:
                continue  # flat: not in the document, needs no mark
            head = (
                f'{{"symbol":{_text(pos.symbol)},"qty":"{qty!s}","entry":"{pos.entry!s}","mark":"'
            )
            tail = f'","leverage":{_int_text(pos.leverage)},"liqPrice":'
            # The leverage as a Decimal divides exactly as the int does, without the conversion.
            rows.append((qty, pos.entry, Decimal(pos.leverage), head, tail, pos.symbol))
        self.rows = tuple(rows)
        self.held = {row[5]: row[0] for row in rows}

    def fits(self, book: AccountBook) -> bool:
        return (
            self.wallet is book.wallet
            and self.status is book.status
            and self.positions == tuple(book.positions.values())
        )


def prepare(book: AccountBook) -> PreparedBook:
    """The book's prepared parts, rebuilt if the book changed since they were made."""
    prepared = book.prepared
    if prepared is None or not prepared.fits(book):
        prepared = book.prepared = PreparedBook(book)
    return prepared


# What a pass knows of one symbol: mark, the mark's text up to the upnl value, its bracket
# table.
_Symbol = tuple[Decimal, str, BracketTable]

# An account's figures for the pass: margin ratio, the document's text before the tier, and
# from the tier's closing quote to the end of the positions.
Figures = tuple[Decimal, str, str]


class DocumentPass:
    """One risk pass: marks and instruments as of the pass, and its timestamp."""

    __slots__ = ("_symbols", "instruments", "marks", "ts_tail")

    def __init__(
        self, marks: Mapping[str, Decimal], instruments: Mapping[str, Instrument], ts: int
    ) -> None:
        self.marks = marks
        self.instruments = instruments
        self.ts_tail = f'],"ts":{ts}}}'
        self._symbols: dict[str, _Symbol] = {}

    def _symbol(self, symbol: str) -> _Symbol:
        mark = self.marks.get(symbol)
        instrument = self.instruments.get(symbol)
        if mark is None or instrument is None:
            raise ValueError(f"no mark price or instrument for held symbol {symbol}")
        found = self._symbols[symbol] = (mark, f'{mark!s}","upnl":"', bracket_table(instrument))
        return found

    def figures(self, book: AccountBook) -> Figures:
        """Risk of ``book`` at this pass's marks (raises like ``compute_snapshot``)."""
        prepared = prepare(book)
        symbols = self._symbols
        # Pass 1, as compute_snapshot: per-position figures and totals.
        staged = []
        total_upnl = ZERO
        total_mm = ZERO
        total_im = ZERO
        for qty, entry, leverage, head, tail, symbol in prepared.rows:
            sym = symbols.get(symbol)
            if sym is None:
                sym = self._symbol(symbol)
            mark, mark_text, table = sym
            value = qty * mark
            if value < ZERO:
                value = -value
            index = bisect_right(table.caps, value)
            bracket = table.rows[index]
            upnl = qty * (mark - entry)
            mm = value * bracket.mmr - bracket.cum
            total_upnl += upnl
            total_mm += mm
            total_im += value / leverage
            staged.append((qty, entry, head, tail, mark_text, table, value, upnl, mm, index))
        orders_im = (
            open_orders_margin(book.orders, prepared.held, self.marks) if book.orders else ZERO
        )

        wallet = book.wallet
        equity = wallet + total_upnl
        base = wallet - total_mm + total_upnl
        # Pass 2: liquidation prices and the positions' text.
        texts = []
        for qty, entry, head, tail, mark_text, table, value, upnl, mm, index in staged:
            price = liquidation_price(qty, entry, base + mm - upnl, table, index)
            if price is not None:
                texts.append(f'{head}{mark_text}{upnl!s}","notional":"{value!s}{tail}"{price!s}"}}')
            else:
                texts.append(f'{head}{mark_text}{upnl!s}","notional":"{value!s}{tail}null}}')

        total_initial = total_im + orders_im
        ratio = margin_ratio(total_mm, equity)
        ratio_text = (
            "Infinity" if ratio == RATIO_BEYOND_LIQUIDATION else str(ratio.quantize(RATIO_PLACES))
        )
        body = (
            f'{prepared.head}{equity!s}","upnl":"{total_upnl!s}","initialMargin":"{total_initial!s}",'
            f'"maintenanceMargin":"{total_mm!s}","marginRatio":"{ratio_text}",'
            f'"available":"{equity - total_initial!s}","tier":"'
        )
        return ratio, body, prepared.status_text + ",".join(texts)

    def document(self, figures: Figures, tier: Tier) -> str:
        """The document of ``figures`` once the account's tier is known (JSON text; the
        stored value is its UTF-8 encoding)."""
        return f"{figures[1]}{tier.value}{figures[2]}{self.ts_tail}"
