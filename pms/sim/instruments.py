"""Symbol specifications: filters, precisions and leverage brackets, as Binance publishes them.

Brackets follow Binance's published USDⓈ-M tiers in shape: each tier ``[floor, cap)`` has a
maximum leverage and a maintenance-margin ratio, and ``cum`` (the maintenance amount) is
derived so the maintenance margin is continuous across tiers:
``cum_n = floor_n * (mmr_n - mmr_{n-1}) + cum_{n-1}``.
"""

from __future__ import annotations

from dataclasses import dataclass
from decimal import Decimal

from pms.sim.errors import invalid_symbol

D = Decimal
MIN_PRICE = Decimal("0.01")
MAX_PRICE = Decimal("1000000")
# PERCENT_PRICE: a limit BUY at most mark * up, a SELL at least mark * down (Binance's values
# for the majors). MAX_NUM_ORDERS: open orders per symbol.
MULTIPLIER_UP = Decimal("1.0500")
MULTIPLIER_DOWN = Decimal("0.9500")
MAX_NUM_ORDERS = 200


@dataclass(frozen=True, slots=True)
class Bracket:
    bracket: int
    initial_leverage: int
    notional_floor: Decimal
    notional_cap: Decimal
    mmr: Decimal
    cum: Decimal

    def payload(self) -> dict[str, object]:
        """``{"bracket":1,"initialLeverage":125,"notionalCap":50000,"notionalFloor":0,
        "maintMarginRatio":0.004,"cum":0.0}`` (Binance sends numbers here)."""
        return {
            "bracket": self.bracket,
            "initialLeverage": self.initial_leverage,
            "notionalCap": int(self.notional_cap),
            "notionalFloor": int(self.notional_floor),
            "maintMarginRatio": float(self.mmr),  # float-ok: Binance sends JSON numbers here
            "cum": float(self.cum),  # float-ok: as Binance does
        }


def make_brackets(tiers: list[tuple[int, int, str]]) -> tuple[Bracket, ...]:
    """``tiers`` = ``[(cap, max_leverage, mmr), ...]`` ascending; floors and cum are derived."""
    out: list[Bracket] = []
    floor = D(0)
    cum = D(0)
    prev_mmr = D(0)
    for i, (cap, lev, mmr_text) in enumerate(tiers, start=1):
        mmr = D(mmr_text)
        cum = floor * (mmr - prev_mmr) + cum
        out.append(Bracket(i, lev, floor, D(cap), mmr, cum))
        floor, prev_mmr = D(cap), mmr
    return tuple(out)


_BTC_TIERS = make_brackets(
    [
        (50_000, 125, "0.004"),
        (600_000, 100, "0.005"),
        (3_000_000, 75, "0.0065"),
        (12_000_000, 50, "0.01"),
        (70_000_000, 25, "0.02"),
        (100_000_000, 20, "0.025"),
        (230_000_000, 10, "0.05"),
        (480_000_000, 5, "0.1"),
        (600_000_000, 4, "0.125"),
        (800_000_000, 3, "0.15"),
        (1_200_000_000, 2, "0.25"),
        (1_800_000_000, 1, "0.5"),
    ]
)
_ETH_TIERS = make_brackets(
    [
        (50_000, 125, "0.004"),
        (600_000, 100, "0.005"),
        (3_000_000, 75, "0.0065"),
        (12_000_000, 50, "0.01"),
        (50_000_000, 25, "0.02"),
        (65_000_000, 20, "0.025"),
        (150_000_000, 10, "0.05"),
        (320_000_000, 5, "0.1"),
        (400_000_000, 4, "0.125"),
        (530_000_000, 3, "0.15"),
        (800_000_000, 2, "0.25"),
        (1_200_000_000, 1, "0.5"),
    ]
)
_ALT_TIERS = make_brackets(
    [
        (5_000, 75, "0.005"),
        (50_000, 50, "0.01"),
        (600_000, 40, "0.015"),
        (1_600_000, 25, "0.02"),
        (4_000_000, 20, "0.025"),
        (10_000_000, 10, "0.05"),
        (20_000_000, 5, "0.1"),
        (25_000_000, 4, "0.125"),
        (50_000_000, 2, "0.25"),
        (100_000_000, 1, "0.5"),
    ]
)


@dataclass(frozen=True, slots=True)
class SymbolSpec:
    """One perpetual. ``level_qty`` is the typical size of one synthetic book level."""

    symbol: str
    base: str
    start_price: Decimal
    tick: Decimal
    step: Decimal
    min_qty: Decimal
    max_qty: Decimal
    market_max_qty: Decimal
    min_notional: Decimal
    level_qty: Decimal
    brackets: tuple[Bracket, ...]
    quote: str = "USDT"
    min_price: Decimal = MIN_PRICE
    max_price: Decimal = MAX_PRICE
    multiplier_up: Decimal = MULTIPLIER_UP
    multiplier_down: Decimal = MULTIPLIER_DOWN
    max_num_orders: int = MAX_NUM_ORDERS

    @property
    def price_precision(self) -> int:
        return max(0, -int(self.tick.normalize().as_tuple().exponent))

    @property
    def qty_precision(self) -> int:
        return max(0, -int(self.step.normalize().as_tuple().exponent))

    @property
    def max_leverage(self) -> int:
        return self.brackets[0].initial_leverage

    def fmt_price(self, value: Decimal) -> str:
        return str(value.quantize(self.tick))

    def fmt_qty(self, value: Decimal) -> str:
        return str(value.quantize(self.step))

    def bracket_for(self, notional: Decimal) -> Bracket:
        for b in self.brackets:
            if notional < b.notional_cap:
                return b
        return self.brackets[-1]

    def max_notional(self, leverage: int) -> Decimal:
        """The largest position notional allowed at ``leverage``: the cap of the highest
        bracket whose ``initialLeverage`` still allows it (``maxNotionalValue`` of
        ``POST /fapi/v1/leverage``; beyond it Binance refuses orders with -2027)."""
        return max(b.notional_cap for b in self.brackets if b.initial_leverage >= leverage)

    def exchange_info(self) -> dict[str, object]:
        """One ``exchangeInfo.symbols[]`` entry::

        {"symbol":"BTCUSDT","pair":"BTCUSDT","contractType":"PERPETUAL","status":"TRADING",
         "baseAsset":"BTC","quoteAsset":"USDT","marginAsset":"USDT","pricePrecision":1,
         "quantityPrecision":3,"filters":[{"filterType":"PRICE_FILTER","tickSize":"0.1",...}],
         "orderTypes":["LIMIT","MARKET",...],"timeInForce":["GTC","IOC","FOK","GTX","GTD"]}
        """
        pp, qp = str(self.tick.normalize()), str(self.step.normalize())
        return {
            "symbol": self.symbol,
            "pair": self.symbol,
            "contractType": "PERPETUAL",
            "deliveryDate": 4133404800000,
            "onboardDate": 1569398400000,
            "status": "TRADING",
            "maintMarginPercent": "2.5000",
            "requiredMarginPercent": "5.0000",
            "baseAsset": self.base,
            "quoteAsset": self.quote,
            "marginAsset": self.quote,
            "pricePrecision": self.price_precision,
            "quantityPrecision": self.qty_precision,
            "baseAssetPrecision": 8,
            "quotePrecision": 8,
            "underlyingType": "COIN",
            "underlyingSubType": [],
            "settlePlan": 0,
            "triggerProtect": "0.0500",
            "liquidationFee": "0.012500",
            "marketTakeBound": "0.05",
            "maxMoveOrderLimit": 10000,
            "filters": [
                {
                    "filterType": "PRICE_FILTER",
                    "tickSize": pp,
                    "minPrice": str(self.min_price),
                    "maxPrice": str(self.max_price),
                },
                {
                    "filterType": "LOT_SIZE",
                    "stepSize": qp,
                    "minQty": str(self.min_qty),
                    "maxQty": str(self.max_qty),
                },
                {
                    "filterType": "MARKET_LOT_SIZE",
                    "stepSize": qp,
                    "minQty": str(self.min_qty),
                    "maxQty": str(self.market_max_qty),
                },
                {"filterType": "MAX_NUM_ORDERS", "limit": self.max_num_orders},
                {"filterType": "MAX_NUM_ALGO_ORDERS", "limit": 10},
                {"filterType": "MIN_NOTIONAL", "notional": str(self.min_notional)},
                {
                    "filterType": "PERCENT_PRICE",
                    "multiplierUp": str(self.multiplier_up),
                    "multiplierDown": str(self.multiplier_down),
                    "multiplierDecimal": "4",
                },
            ],
            "orderTypes": [
                "LIMIT",
                "MARKET",
                "STOP",
                "STOP_MARKET",
                "TAKE_PROFIT",
                "TAKE_PROFIT_MARKET",
                "TRAILING_STOP_MARKET",
            ],
            "timeInForce": ["GTC", "IOC", "FOK", "GTX", "GTD"],
        }


def _spec(
    sym: str, base: str, price: str, tick: str, step: str, max_qty: str, mkt_max: str,
    min_notional: str, level_qty: str, brackets: tuple[Bracket, ...],
) -> SymbolSpec:  # fmt: skip
    return SymbolSpec(
        symbol=sym,
        base=base,
        start_price=D(price),
        tick=D(tick),
        step=D(step),
        min_qty=D(step),
        max_qty=D(max_qty),
        market_max_qty=D(mkt_max),
        min_notional=D(min_notional),
        level_qty=D(level_qty),
        brackets=brackets,
    )


KNOWN: dict[str, SymbolSpec] = {
    s.symbol: s
    for s in (
        _spec("BTCUSDT", "BTC", "60000", "0.1", "0.001", "1000", "120", "100", "0.5", _BTC_TIERS),
        _spec("ETHUSDT", "ETH", "3000", "0.01", "0.001", "10000", "2000", "20", "5", _ETH_TIERS),
        _spec("SOLUSDT", "SOL", "150", "0.01", "0.01", "1000000", "5000", "5", "50", _ALT_TIERS),
        _spec("BNBUSDT", "BNB", "600", "0.01", "0.01", "100000", "2000", "5", "10", _ALT_TIERS),
        _spec(
            "XRPUSDT",
            "XRP",
            "0.6",
            "0.0001",
            "0.1",
            "10000000",
            "2000000",
            "5",
            "20000",
            _ALT_TIERS,
        ),
        _spec(
            "DOGEUSDT",
            "DOGE",
            "0.15",
            "0.00001",
            "1",
            "50000000",
            "30000000",
            "5",
            "50000",
            _ALT_TIERS,
        ),
    )
}
DEFAULT_SYMBOLS = ("BTCUSDT", "ETHUSDT", "SOLUSDT", "BNBUSDT", "XRPUSDT", "DOGEUSDT")


def spec_for(symbol: str) -> SymbolSpec:
    """The spec of a known symbol, or a generic USDT perpetual priced at 100 for others."""
    upper = symbol.upper()
    if upper in KNOWN:
        return KNOWN[upper]
    if not upper.endswith("USDT") or len(upper) <= 4 or not upper.isalnum():
        raise invalid_symbol()
    return _spec(upper, upper[:-4], "100", "0.01", "0.01", "1000000", "10000", "5", "20",
                 _ALT_TIERS)  # fmt: skip
