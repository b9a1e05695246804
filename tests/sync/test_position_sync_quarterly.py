"""Position-sync (pms/sync/positions.py) with contracts the engine does not trade: SPEC §6 "per symbol, the sum of
sub-account positions vs the exchange's position; a difference raises position_drift"."""

from __future__ import annotations

from decimal import Decimal
from typing import Any

from pms.app import App
from pms.sim.runner import SimServer
from pms.sync.positions import sync_positions
from tests.trading.conftest import ETH

D = Decimal


def test_a_position_in_a_delivery_contract_does_not_blind_position_sync(
    app: App,
    sim: SimServer,
) -> None:
    """The master account is a Binance USDⓈ-M account: /fapi/v3/positionRisk also lists
    positions in quarterly contracts (``BTCUSDT_260626``), e.g. opened by hand outside the
    engine - exactly what position-sync exists to report. fetch_positions maps every row with
    from_exchange_id, which raises ValueError on such a symbol, so sync_positions raises and
    reported nothing at all, not even a real drift on a perpetual. Such rows are left out;
    order-sync's open orders likewise."""
    assert sync_positions(app) == []
    sim.admin("/sim/positions/adjust", {"symbol": "ETHUSDT", "qty": "0.2"})  # a real drift
    real_call = app.exchange._call  # type: ignore[attr-defined]

    def call(action: str, method: str, params: dict[str, Any]) -> Any:
        rows = real_call(action, method, params)
        if method == "fapiPrivateV3GetPositionRisk":
            rows = [
                *rows,
                {
                    "symbol": "BTCUSDT_260626",
                    "positionSide": "BOTH",
                    "positionAmt": "0.010",
                    "entryPrice": "61000.0",
                    "markPrice": "61100.0",
                    "unRealizedProfit": "1.0",
                },
            ]
        return rows

    app.exchange._call = call  # type: ignore[attr-defined]
    try:
        drifts = sync_positions(app)
    finally:
        app.exchange._call = real_call  # type: ignore[attr-defined]
        sim.admin("/sim/positions/adjust", {"symbol": "ETHUSDT", "qty": "-0.2"})
    assert ETH in {d.symbol for d in drifts}
    assert next(d for d in drifts if d.symbol == ETH).diff == D("0.2")
