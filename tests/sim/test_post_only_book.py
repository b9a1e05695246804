"""Post-only (GTX) judged against the book the simulator itself publishes.

Binance fact (New Order / error -5022 "Due to the order could not be executed as maker, the
Post Only order will be rejected."): a GTX order is rejected only if it would trade
immediately, i.e. a BUY priced at or above the best ask actually in the book. A BUY below the
best ask rests as a maker order.

The defect this guards against: pms/sim/matching.py Engine._crosses compared with
Market.best_ask()/best_bid(), the synthetic top price, even after that level's whole quantity
had been taken (consumed liquidity is remembered until the mid moves), while REST
bookTicker/depth and the streams already showed the next level as best: a chase that joined
the published best bid/ask got -5022. All now use Market.best_level.
"""

from __future__ import annotations

from decimal import Decimal

from pms.sim.runner import SimServer
from tests.sim.conftest import Raw


def test_gtx_below_published_best_ask_is_accepted_after_top_level_taken(
    sim: SimServer, raw: Raw
) -> None:
    book = raw.send("GET", "/fapi/v1/depth", {"symbol": "BTCUSDT", "limit": 5},
                    signed=False).json()  # fmt: skip
    top_price, top_qty = book["asks"][0]
    take = raw.send("POST", "/fapi/v1/order",
                    {"symbol": "BTCUSDT", "side": "BUY", "type": "MARKET",
                     "quantity": top_qty, "newOrderRespType": "RESULT"}).json()  # fmt: skip
    assert take["status"] == "FILLED" and take["avgPrice"] == top_price, take
    after = raw.send("GET", "/fapi/v1/depth", {"symbol": "BTCUSDT", "limit": 5},
                     signed=False).json()  # fmt: skip
    best_ask = Decimal(after["asks"][0][0])
    assert best_ask > Decimal(top_price)  # the level is gone from the published book
    # A post-only bid one tick below the published best ask cannot trade: it must rest.
    price = best_ask - Decimal("0.1")
    resp = raw.send("POST", "/fapi/v1/order",
                    {"symbol": "BTCUSDT", "side": "BUY", "type": "LIMIT", "timeInForce": "GTX",
                     "quantity": "0.002", "price": str(price)})  # fmt: skip
    assert resp.status_code == 200, resp.text
    assert resp.json()["status"] == "NEW"


def test_book_ticker_after_top_level_taken_is_not_a_500(sim: SimServer, raw: Raw) -> None:
    """pms/sim/rest.py book_ticker used ``m.side_levels(False, 1)[0]``, which looks at ONE
    price level (iter_levels' ``depth`` counts prices, consumed ones included), so a fully
    taken top level gave an empty list and IndexError -> HTTP 500 until the mid moved.
    Binance's /fapi/v1/ticker/bookTicker always answers the best remaining bid/ask."""
    book = raw.send("GET", "/fapi/v1/depth", {"symbol": "BTCUSDT", "limit": 5},
                    signed=False).json()  # fmt: skip
    top_price, top_qty = book["asks"][0]
    raw.send(
        "POST",
        "/fapi/v1/order",
        {"symbol": "BTCUSDT", "side": "BUY", "type": "MARKET", "quantity": top_qty},
    )
    resp = raw.send("GET", "/fapi/v1/ticker/bookTicker", {"symbol": "BTCUSDT"}, signed=False)
    assert resp.status_code == 200, resp.text
    assert Decimal(resp.json()["askPrice"]) > Decimal(top_price)
