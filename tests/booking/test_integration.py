"""End to end against the simulator (REST booking path: record_exchange_state →
book_order_fill): open, add, reduce, flip, close by market orders; the one sub-account's
books must match the master account's (this module's own simulator) to the cent."""

from __future__ import annotations

from collections.abc import Callable
from decimal import Decimal
from typing import Any

from sqlalchemy import func, select

from pms.app import App
from pms.commands import schemas as cmd
from pms.db.models import Fill, LedgerEntry, Order, Position, SubAccount
from pms.db.session import unit_of_work
from pms.domain.enums import Side
from pms.exchange.model import TradeReport
from pms.execution.booking import book_fill
from pms.sim.runner import SimServer
from tests.trading.conftest import BTC, ETH

D = Decimal


def _master(sim: SimServer) -> tuple[Decimal, dict[str, Decimal]]:
    state = sim.admin("/sim/state")
    return D(state["balances"]["USDT"]), {
        p["symbol"]: D(p["positionAmt"]) for p in state["positions"]
    }


def test_sub_account_books_match_the_master_account(
    app: App, trader: Callable[..., Any], sim: SimServer, prices: Callable[..., None]
) -> None:
    t = trader("100000")
    sub = t.sub_account_id
    wallet0, pos0 = _master(sim)
    steps = [
        ("BTCUSDT", "60000", BTC, "BUY", "0.010"),
        ("BTCUSDT", "61000", BTC, "BUY", "0.005"),  # add
        ("BTCUSDT", "59000", BTC, "SELL", "0.008"),  # reduce at a loss
        ("ETHUSDT", "3000", ETH, "SELL", "0.3"),  # open short
        ("BTCUSDT", "62000", BTC, "SELL", "0.020"),  # flip long 0.007 → short 0.013
        ("ETHUSDT", "2900", ETH, "BUY", "0.5"),  # flip short 0.3 → long 0.2
        ("BTCUSDT", "60500", BTC, "BUY", "0.013"),  # close
        ("ETHUSDT", "3100", ETH, "SELL", "0.2"),  # close
    ]
    for exchange_symbol, price, symbol, side, qty in steps:
        prices(exchange_symbol, price)
        app.prices.forget()
        result = t.send(
            "place_market_order",
            (cmd.PlaceMarketOrder, app.orders.place_market),
            subAccountId=sub,
            symbol=symbol,
            side=side,
            qty=qty,
            leverage=20,
        )
        assert result["ok"], result
    wallet1, pos1 = _master(sim)

    with unit_of_work(app.sessions) as s:
        account = s.get(SubAccount, sub)
        assert account is not None
        ledger = s.execute(
            select(func.sum(LedgerEntry.amount)).where(LedgerEntry.sub_account_id == sub)
        ).scalar_one()
        fills = list(s.execute(select(Fill).where(Fill.sub_account_id == sub)).scalars())
        rows = list(s.execute(select(Position).where(Position.sub_account_id == sub)).scalars())
        orders = list(s.execute(select(Order).where(Order.sub_account_id == sub)).scalars())
        assert all(o.status == "FILLED" and o.filled_qty == o.qty for o in orders)
        assert all(p.closed_at is not None and p.qty == 0 for p in rows)
        assert account.wallet_balance == ledger
        realized = sum((f.realized_pnl for f in fills), D(0))
        fees = sum((f.fee for f in fills), D(0))
        assert account.wallet_balance == D("100000") + realized - fees
        # The master's wallet moved by exactly what this sub-account realized minus fees.
        assert abs((account.wallet_balance - D("100000")) - (wallet1 - wallet0)) < D("0.00000002")
        assert pos1 == pos0
        # Every fill reported again by the other paths is not booked again.
        for f in fills:
            again = TradeReport(
                symbol=f.symbol,
                trade_id=f.exchange_trade_id,
                exchange_order_id=next(o.exchange_order_id for o in orders if o.id == f.order_id),
                client_order_id=next(o.client_order_id for o in orders if o.id == f.order_id),
                side=Side(f.side),
                qty=f.qty,
                price=f.price,
                fee=f.fee,
                fee_asset=f.fee_asset,
                is_maker=f.is_maker,
                traded_at=f.traded_at,
                order_status="FILLED",
            )
            assert book_fill(s, again, "stream") is None
            assert book_fill(s, again, "sync") is None
