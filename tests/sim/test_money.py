"""Wallet arithmetic must be exactly the sum of what the exchange reports per trade.

Binance fact: every wallet change of a USDⓈ-M account is an income record (GET /fapi/v1/income:
REALIZED_PNL, COMMISSION, FUNDING_FEE, TRANSFER, ...), and each trade reports its own
``realizedPnl`` and ``commission`` (userTrades; ``rp``/``n`` in ORDER_TRADE_UPDATE), all with 8
decimals; walletBalance is their sum. The engine books fills from those figures (SPEC §4:
"balance = sum of its entries") and position-sync compares with the exchange, so the
simulator's wallet must be that same sum, to the last 1e-8.

The defect this guards against: pms/sim/account.py apply_fill added the unrounded
``realized`` (entry price is a 28-digit quotient) to the wallet but reported
``money(realized, 8)``.
"""

from __future__ import annotations

from decimal import Decimal

from pms.sim.runner import SimServer
from tests.sim.conftest import Raw

D = Decimal


def _market(raw: Raw, side: str, qty: str) -> None:
    resp = raw.send(
        "POST",
        "/fapi/v1/order",
        {
            "symbol": "BTCUSDT",
            "side": side,
            "type": "MARKET",
            "quantity": qty,
            "newOrderRespType": "RESULT",
        },
    )
    assert resp.status_code == 200 and resp.json()["status"] == "FILLED", resp.text


def test_wallet_equals_start_plus_reported_realized_pnl_minus_commission(
    sim: SimServer, raw: Raw
) -> None:
    # Three buys of 0.1 at 60000.1, 60000.2, 60000.2: entry 60000.1666... (repeating).
    sim.admin("/sim/price", {"symbol": "BTCUSDT", "price": "60000"})
    _market(raw, "BUY", "0.1")
    sim.admin("/sim/price", {"symbol": "BTCUSDT", "price": "60000.1"})
    _market(raw, "BUY", "0.1")
    sim.admin("/sim/price", {"symbol": "BTCUSDT", "price": "60000.15"})
    sim.admin("/sim/price", {"symbol": "BTCUSDT", "price": "60000.1"})
    _market(raw, "BUY", "0.1")
    # Three sells of 0.1 at 60010.0: each realises 0.98333333333... (reported 0.98333333).
    for _ in range(3):
        sim.admin("/sim/price", {"symbol": "BTCUSDT", "price": "60010.1"})
        _market(raw, "SELL", "0.1")
        sim.admin("/sim/price", {"symbol": "BTCUSDT", "price": "60010.2"})
    trades = raw.send("GET", "/fapi/v1/userTrades", {"symbol": "BTCUSDT"}).json()
    assert len(trades) == 6
    assert sorted({t["price"] for t in trades}) == ["60000.1", "60000.2", "60010.0"]
    reported = D("1000000") + sum((D(t["realizedPnl"]) - D(t["commission"]) for t in trades), D(0))
    account = raw.send("GET", "/fapi/v3/account").json()
    assert D(account["totalWalletBalance"]) == reported
