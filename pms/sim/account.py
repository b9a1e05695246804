"""The master account: USDT wallet, one-way positions, leverage and cross margin.

Math (contract multiplier 1, see the reference §4):
``uPnL = amt * (mark - entry)``; position initial margin ``|amt| * mark / leverage``;
maintenance margin ``|amt| * mark * mmr - cum`` from the symbol's bracket; available balance
``wallet + uPnL - position IM - open-order IM``. Fees are charged in USDT on every fill.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from decimal import Decimal

from pms.domain.numbers import money
from pms.sim.instruments import SymbolSpec

ZERO = Decimal(0)
DEFAULT_LEVERAGE = 20


def m8(value: Decimal) -> str:
    """Money on the wire: 8 decimals like Binance (``"1000000.00000000"``)."""
    return format(money(value, 8), "f")


def px(value: Decimal) -> str:
    """A derived price (entry, break-even) with up to 8 decimals, never in exponent form."""
    return format(money(value, 8).normalize(), "f")


@dataclass(slots=True)
class Position:
    """Mutable state of one one-way (``BOTH``) position."""

    symbol: str
    amt: Decimal = ZERO
    entry: Decimal = ZERO
    realized: Decimal = ZERO
    update_time: int = 0

    def upnl(self, mark: Decimal) -> Decimal:
        return self.amt * (mark - self.entry) if self.amt else ZERO


@dataclass(slots=True)
class FillResult:
    realized_pnl: Decimal
    commission: Decimal


class Account:
    """Wallet and positions. ``marks`` gives the current mark price of a symbol."""

    def __init__(
        self,
        specs: dict[str, SymbolSpec],
        marks: Callable[[str], Decimal],
        balance: Decimal,
        now_ms: int,
    ) -> None:
        self.specs = specs
        self.marks = marks
        self.wallet = balance
        self.update_time = now_ms
        self.leverage: dict[str, int] = {s: DEFAULT_LEVERAGE for s in specs}
        # POST /fapi/v1/feeBurn: the BNB fee discount (commissions stay USDT: no BNB held).
        self.fee_burn = False
        self.positions: dict[str, Position] = {s: Position(s) for s in specs}

    # --- mutations -------------------------------------------------------------------
    def apply_fill(
        self, symbol: str, buy: bool, qty: Decimal, price: Decimal, fee_rate: Decimal, now: int
    ) -> FillResult:
        pos = self.positions[symbol]
        signed = qty if buy else -qty
        realized = ZERO
        if pos.amt == 0 or (pos.amt > 0) == buy:
            total = abs(pos.amt) + qty
            pos.entry = (abs(pos.amt) * pos.entry + qty * price) / total
            pos.amt += signed
        else:
            closing = min(qty, abs(pos.amt))
            direction = Decimal(1) if pos.amt > 0 else Decimal(-1)
            realized = closing * (price - pos.entry) * direction
            pos.amt += signed
            if pos.amt == 0:
                pos.entry = ZERO
            elif (pos.amt > 0) == buy:  # flipped: the remainder opens at the fill price
                pos.entry = price
        # Both figures are rounded to the 8 decimals the trade reports (userTrades, ``rp``/``n``)
        # before they move the wallet: the wallet is exactly the sum of the reported figures,
        # as Binance's is the sum of its income records (the entry price is a long quotient,
        # so the unrounded PnL would drift from what the engine books).
        realized = money(realized, 8)
        commission = money(qty * price * fee_rate, 8)
        pos.realized += realized
        pos.update_time = now
        self.wallet += realized - commission
        self.update_time = now
        return FillResult(realized, commission)

    def adjust_position(self, symbol: str, qty: Decimal, now: int) -> None:
        """Admin: add ``qty`` (signed) to a position at the mark, with no fee and no order."""
        pos = self.positions[symbol]
        mark = self.marks(symbol)
        if qty == 0:
            return
        if pos.amt == 0 or (pos.amt > 0) == (qty > 0):
            total = abs(pos.amt) + abs(qty)
            pos.entry = (abs(pos.amt) * pos.entry + abs(qty) * mark) / total
        elif abs(qty) >= abs(pos.amt):
            pos.entry = mark if abs(qty) > abs(pos.amt) else ZERO
        pos.amt += qty
        if pos.amt == 0:
            pos.entry = ZERO
        pos.update_time = now

    def apply_funding(self, fee: Decimal, now: int) -> None:
        """A funding fee (signed, already rounded) paid into or out of the wallet."""
        self.wallet += fee
        self.update_time = max(self.update_time, now)

    # --- figures ---------------------------------------------------------------------
    def position_im(self, symbol: str) -> Decimal:
        pos = self.positions[symbol]
        return abs(pos.amt) * self.marks(symbol) / self.leverage[symbol]

    def maint_margin(self, symbol: str) -> Decimal:
        pos = self.positions[symbol]
        notional = abs(pos.amt) * self.marks(symbol)
        if notional == 0:
            return ZERO
        b = self.specs[symbol].bracket_for(notional)
        return notional * b.mmr - b.cum

    def total_upnl(self) -> Decimal:
        return sum((p.upnl(self.marks(s)) for s, p in self.positions.items()), ZERO)

    def available(self, open_order_im: Decimal) -> Decimal:
        used = sum((self.position_im(s) for s in self.positions), ZERO) + open_order_im
        return self.wallet + self.total_upnl() - used

    # --- payloads --------------------------------------------------------------------
    def position_risk(self, symbol: str, open_im: Decimal) -> dict[str, object]:
        """``GET /fapi/v3/positionRisk`` item::

        {"symbol":"BTCUSDT","positionSide":"BOTH","positionAmt":"0.010","entryPrice":"60000.0",
         "breakEvenPrice":"60030.0","markPrice":"61000.0","unRealizedProfit":"10.00000000",
         "liquidationPrice":"0","isolatedMargin":"0","notional":"610.00000000",
         "marginAsset":"USDT","isolatedWallet":"0","initialMargin":"30.50000000",
         "maintMargin":"2.44000000","positionInitialMargin":"30.50000000",
         "openOrderInitialMargin":"0","adl":0,"bidNotional":"0","askNotional":"0",
         "updateTime":1767225600000}
        """
        spec = self.specs[symbol]
        pos = self.positions[symbol]
        mark = self.marks(symbol)
        pim = self.position_im(symbol)
        return {
            "symbol": symbol,
            "positionSide": "BOTH",
            "positionAmt": spec.fmt_qty(pos.amt),
            "entryPrice": px(pos.entry) if pos.amt else "0.0",
            "breakEvenPrice": px(pos.entry) if pos.amt else "0.0",
            "markPrice": str(mark),
            "unRealizedProfit": m8(pos.upnl(mark)),
            "liquidationPrice": self._liquidation_price(symbol),
            "isolatedMargin": "0",
            "notional": m8(pos.amt * mark),
            "marginAsset": "USDT",
            "isolatedWallet": "0",
            "initialMargin": m8(pim + open_im),
            "maintMargin": m8(self.maint_margin(symbol)),
            "positionInitialMargin": m8(pim),
            "openOrderInitialMargin": m8(open_im),
            "adl": 0,
            "bidNotional": "0",
            "askNotional": "0",
            "updateTime": pos.update_time,
        }

    def _liquidation_price(self, symbol: str) -> str:
        pos = self.positions[symbol]
        if pos.amt == 0:
            return "0"
        others_mm = sum((self.maint_margin(s) for s in self.positions if s != symbol), ZERO)
        others_up = sum(
            (p.upnl(self.marks(s)) for s, p in self.positions.items() if s != symbol), ZERO
        )
        w = self.wallet - others_mm + others_up
        q = abs(pos.amt)
        b = self.specs[symbol].bracket_for(q * self.marks(symbol))
        if pos.amt > 0:
            lp = (q * pos.entry - w - b.cum) / (q * (1 - b.mmr))
        else:
            lp = (q * pos.entry + w + b.cum) / (q * (1 + b.mmr))
        return self.specs[symbol].fmt_price(max(ZERO, lp))

    def account_v3(self, open_im: dict[str, Decimal]) -> dict[str, object]:
        """``GET /fapi/v3/account`` (assets with a non-zero updateTime, or ccxt skips them)::

        {"totalWalletBalance":"1000000.00000000","availableBalance":"999969.50000000",
         "assets":[{"asset":"USDT","walletBalance":"1000000.00000000",...,"updateTime":1}],
         "positions":[{"symbol":"BTCUSDT","positionSide":"BOTH","positionAmt":"0.010",...}]}
        """
        total_oim = sum(open_im.values(), ZERO)
        pim = sum((self.position_im(s) for s in self.positions), ZERO)
        mm = sum((self.maint_margin(s) for s in self.positions), ZERO)
        up = self.total_upnl()
        avail = self.wallet + up - pim - total_oim
        asset = {
            "asset": "USDT",
            "walletBalance": m8(self.wallet),
            "unrealizedProfit": m8(up),
            "marginBalance": m8(self.wallet + up),
            "maintMargin": m8(mm),
            "initialMargin": m8(pim + total_oim),
            "positionInitialMargin": m8(pim),
            "openOrderInitialMargin": m8(total_oim),
            "crossWalletBalance": m8(self.wallet),
            "crossUnPnl": m8(up),
            "availableBalance": m8(avail),
            "maxWithdrawAmount": m8(max(ZERO, avail)),
            "updateTime": self.update_time or 1,
        }
        positions = []
        for s, p in self.positions.items():
            if p.amt == 0 and open_im.get(s, ZERO) == 0:
                continue
            mark = self.marks(s)
            positions.append(
                {
                    "symbol": s,
                    "positionSide": "BOTH",
                    "positionAmt": self.specs[s].fmt_qty(p.amt),
                    "unrealizedProfit": m8(p.upnl(mark)),
                    "isolatedMargin": "0",
                    "notional": m8(p.amt * mark),
                    "isolatedWallet": "0",
                    "initialMargin": m8(self.position_im(s) + open_im.get(s, ZERO)),
                    "maintMargin": m8(self.maint_margin(s)),
                    "updateTime": p.update_time,
                }
            )
        return {
            "totalInitialMargin": asset["initialMargin"],
            "totalMaintMargin": asset["maintMargin"],
            "totalWalletBalance": asset["walletBalance"],
            "totalUnrealizedProfit": asset["unrealizedProfit"],
            "totalMarginBalance": asset["marginBalance"],
            "totalPositionInitialMargin": asset["positionInitialMargin"],
            "totalOpenOrderInitialMargin": asset["openOrderInitialMargin"],
            "totalCrossWalletBalance": asset["crossWalletBalance"],
            "totalCrossUnPnl": asset["crossUnPnl"],
            "availableBalance": asset["availableBalance"],
            "maxWithdrawAmount": asset["maxWithdrawAmount"],
            "assets": [asset],
            "positions": positions,
        }

    def account_update(
        self, symbols: list[str], now: int, reason: str, balance_change: Decimal = ZERO
    ) -> dict[str, object]:
        """``ACCOUNT_UPDATE`` user-data event (``bc``: the balance change other than PnL and
        commission, e.g. a funding fee; ``P`` lists ``symbols``)::

        {"e":"ACCOUNT_UPDATE","E":1767225600000,"T":1767225600000,"a":{"m":"ORDER",
         "B":[{"a":"USDT","wb":"999969.70000000","cw":"999969.70000000","bc":"0"}],
         "P":[{"s":"BTCUSDT","pa":"0.010","ep":"60000.0","bep":"60000.0","cr":"0.00000000",
               "up":"0.00000000","mt":"cross","iw":"0","ps":"BOTH"}]}}
        """
        ps = []
        for s in symbols:
            p = self.positions[s]
            ps.append(
                {
                    "s": s,
                    "pa": self.specs[s].fmt_qty(p.amt),
                    "ep": px(p.entry) if p.amt else "0",
                    "bep": px(p.entry) if p.amt else "0",
                    "cr": m8(p.realized),
                    "up": m8(p.upnl(self.marks(s))),
                    "mt": "cross",
                    "iw": "0",
                    "ps": "BOTH",
                }
            )
        w = m8(self.wallet)
        bc = m8(balance_change) if balance_change else "0"
        return {
            "e": "ACCOUNT_UPDATE",
            "E": now,
            "T": now,
            "a": {"m": reason, "B": [{"a": "USDT", "wb": w, "cw": w, "bc": bc}], "P": ps},
        }
