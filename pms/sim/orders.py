"""Order value types and the order/trade wire formats.

``Order`` is the simulator's mutable record of one order; ``OrderRequest`` is a validated
request (see :mod:`pms.sim.validation`).
"""

from __future__ import annotations

import enum
from dataclasses import dataclass, field
from decimal import Decimal

from pms.sim.account import m8
from pms.sim.instruments import SymbolSpec

ZERO = Decimal(0)


class OrderType(enum.StrEnum):
    LIMIT = "LIMIT"
    MARKET = "MARKET"


class Tif(enum.StrEnum):
    GTC = "GTC"
    IOC = "IOC"
    FOK = "FOK"
    GTX = "GTX"
    GTD = "GTD"


class Status(enum.StrEnum):
    NEW = "NEW"
    PARTIALLY_FILLED = "PARTIALLY_FILLED"
    FILLED = "FILLED"
    CANCELED = "CANCELED"
    EXPIRED = "EXPIRED"

    @property
    def is_open(self) -> bool:
        return self in (Status.NEW, Status.PARTIALLY_FILLED)


@dataclass(frozen=True, slots=True)
class OrderRequest:
    symbol: str
    buy: bool
    type: OrderType
    tif: Tif
    qty: Decimal
    price: Decimal | None
    reduce_only: bool
    client_id: str


@dataclass(slots=True)
class Order:
    order_id: int
    client_id: str
    spec: SymbolSpec
    buy: bool
    type: OrderType
    tif: Tif
    price: Decimal
    orig_qty: Decimal
    reduce_only: bool
    time: int
    update_time: int
    executed: Decimal = ZERO
    cum_quote: Decimal = ZERO
    status: Status = Status.NEW
    modify_count: int = 0
    seq: int = 0  # queue position: re-set on amend (the order is re-queued)
    fills: list[int] = field(default_factory=list)

    @property
    def symbol(self) -> str:
        return self.spec.symbol

    @property
    def remaining(self) -> Decimal:
        return self.orig_qty - self.executed

    @property
    def side(self) -> str:
        return "BUY" if self.buy else "SELL"

    def avg_price(self) -> Decimal:
        return self.cum_quote / self.executed if self.executed else ZERO

    def fmt_avg(self) -> str:
        avg = self.avg_price()
        if avg == 0:
            return "0.00"
        return format(avg.quantize(Decimal("1e-8")).normalize(), "f")

    def ack_payload(self) -> dict[str, object]:
        """The answer to ``newOrderRespType=ACK`` (Binance's default): the order as accepted,
        before it matched, so a MARKET order still shows ``NEW`` with nothing executed; its
        fills are reported by the user stream and by a later query::

        {"orderId":1000000001,"symbol":"BTCUSDT","status":"NEW","clientOrderId":"x-1",
         "price":"0.0","avgPrice":"0.00","origQty":"0.010","executedQty":"0.000",
         "cumQty":"0.000","cumQuote":"0.00000000",...,"updateTime":1767225600000}
        """
        zero = self.spec.fmt_qty(ZERO)
        return {
            **self.payload(),
            "status": str(Status.NEW),
            "avgPrice": "0.00",
            "executedQty": zero,
            "cumQty": zero,
            "cumQuote": m8(ZERO),
            "updateTime": self.time,
        }

    def payload(self) -> dict[str, object]:
        """REST order object (``newOrderRespType=RESULT``, queries, cancels, amends)::

        {"orderId":1000000001,"symbol":"BTCUSDT","status":"FILLED","clientOrderId":"x-1",
         "price":"0.0","avgPrice":"60000.15","origQty":"0.010","executedQty":"0.010",
         "cumQty":"0.010","cumQuote":"600.00150000","timeInForce":"GTC","type":"MARKET",
         "reduceOnly":false,"closePosition":false,"side":"BUY","positionSide":"BOTH",
         "stopPrice":"0.0","workingType":"CONTRACT_PRICE","priceProtect":false,
         "origType":"MARKET","priceMatch":"NONE","selfTradePreventionMode":"EXPIRE_MAKER",
         "goodTillDate":0,"time":1767225600000,"updateTime":1767225600000}
        """
        spec = self.spec
        return {
            "orderId": self.order_id,
            "symbol": spec.symbol,
            "status": str(self.status),
            "clientOrderId": self.client_id,
            "price": spec.fmt_price(self.price),
            "avgPrice": self.fmt_avg(),
            "origQty": spec.fmt_qty(self.orig_qty),
            "executedQty": spec.fmt_qty(self.executed),
            "cumQty": spec.fmt_qty(self.executed),
            "cumQuote": m8(self.cum_quote),
            "timeInForce": str(self.tif),
            "type": str(self.type),
            "reduceOnly": self.reduce_only,
            "closePosition": False,
            "side": self.side,
            "positionSide": "BOTH",
            "stopPrice": spec.fmt_price(ZERO),
            "workingType": "CONTRACT_PRICE",
            "priceProtect": False,
            "origType": str(self.type),
            "priceMatch": "NONE",
            "selfTradePreventionMode": "EXPIRE_MAKER",
            "goodTillDate": 0,
            "time": self.time,
            "updateTime": self.update_time,
        }


@dataclass(frozen=True, slots=True)
class Trade:
    trade_id: int
    order_id: int
    spec: SymbolSpec
    buy: bool
    price: Decimal
    qty: Decimal
    commission: Decimal
    realized_pnl: Decimal
    maker: bool
    time: int

    def payload(self) -> dict[str, object]:
        """``GET /fapi/v1/userTrades`` item::

        {"symbol":"BTCUSDT","id":1,"orderId":1000000001,"side":"BUY","price":"60000.1",
         "qty":"0.010","realizedPnl":"0.00000000","quoteQty":"600.00100000",
         "commission":"0.30000050","commissionAsset":"USDT","time":1767225600000,
         "positionSide":"BOTH","buyer":true,"maker":false,"marginAsset":"USDT"}
        """
        return {
            "symbol": self.spec.symbol,
            "id": self.trade_id,
            "orderId": self.order_id,
            "side": "BUY" if self.buy else "SELL",
            "price": self.spec.fmt_price(self.price),
            "qty": self.spec.fmt_qty(self.qty),
            "realizedPnl": m8(self.realized_pnl),
            "quoteQty": m8(self.price * self.qty),
            "commission": m8(self.commission),
            "commissionAsset": "USDT",
            "time": self.time,
            "positionSide": "BOTH",
            "buyer": self.buy,
            "maker": self.maker,
            "marginAsset": "USDT",
        }


def order_trade_update(
    order: Order, exec_type: str, now: int, trade: Trade | None = None
) -> dict[str, object]:
    """``ORDER_TRADE_UPDATE`` user-data event::

    {"e":"ORDER_TRADE_UPDATE","E":1767225600000,"T":1767225600000,"o":{"s":"BTCUSDT",
     "c":"x-1","S":"BUY","o":"LIMIT","f":"GTC","q":"0.010","p":"59000.0","ap":"0.00",
     "sp":"0.0","x":"TRADE","X":"PARTIALLY_FILLED","i":1000000001,"l":"0.004",
     "z":"0.004","L":"59000.0","n":"0.04720000","N":"USDT","T":1767225600000,"t":7,
     "b":"0","a":"0","m":true,"R":false,"wt":"CONTRACT_PRICE","ot":"LIMIT","ps":"BOTH",
     "cp":false,"rp":"0.00000000","pP":false,"si":0,"ss":0,"V":"EXPIRE_MAKER",
     "pm":"NONE","gtd":0}}
    """
    spec = order.spec
    o: dict[str, object] = {
        "s": spec.symbol,
        "c": order.client_id,
        "S": order.side,
        "o": str(order.type),
        "f": str(order.tif),
        "q": spec.fmt_qty(order.orig_qty),
        "p": spec.fmt_price(order.price),
        "ap": order.fmt_avg(),
        "sp": spec.fmt_price(ZERO),
        "x": exec_type,
        "X": str(order.status),
        "i": order.order_id,
        "l": spec.fmt_qty(trade.qty if trade else ZERO),
        "z": spec.fmt_qty(order.executed),
        "L": spec.fmt_price(trade.price if trade else ZERO),
        "n": m8(trade.commission if trade else ZERO),
        "N": "USDT",
        "T": trade.time if trade else now,
        "t": trade.trade_id if trade else 0,
        "b": "0",
        "a": "0",
        "m": trade.maker if trade else False,
        "R": order.reduce_only,
        "wt": "CONTRACT_PRICE",
        "ot": str(order.type),
        "ps": "BOTH",
        "cp": False,
        "rp": m8(trade.realized_pnl if trade else ZERO),
        "pP": False,
        "si": 0,
        "ss": 0,
        "V": "EXPIRE_MAKER",
        "pm": "NONE",
        "gtd": 0,
    }
    return {"e": "ORDER_TRADE_UPDATE", "E": now, "T": now, "o": o}
