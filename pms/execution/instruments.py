"""The exchange's instruments (filters, brackets), loaded once per process and refreshed."""

from __future__ import annotations

import threading

from pms.clock import Clock
from pms.domain.instrument import Instrument
from pms.errors import UnknownSymbol
from pms.exchange.model import Exchange

REFRESH_MS = 3_600_000


class InstrumentCache:
    def __init__(self, exchange: Exchange, clock: Clock) -> None:
        self._exchange = exchange
        self._clock = clock
        self._instruments: dict[str, Instrument] = {}
        self._loaded_at = -REFRESH_MS
        self._lock = threading.Lock()

    def all(self) -> dict[str, Instrument]:
        if self._clock.ms() - self._loaded_at >= REFRESH_MS or not self._instruments:
            with self._lock:
                if self._clock.ms() - self._loaded_at >= REFRESH_MS or not self._instruments:
                    self._instruments = self._exchange.load_instruments()
                    self._loaded_at = self._clock.ms()
        return self._instruments

    def get(self, symbol: str) -> Instrument:
        instrument = self.all().get(symbol)
        if instrument is None:
            raise UnknownSymbol(f"unknown symbol {symbol!r}", {"symbol": symbol})
        return instrument
