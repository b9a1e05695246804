"""An admin freeze that lands between two attempts of a liquidation (the account LIQUIDATING
after a FAILED one, waiting out the backoff) must not end the liquidation. It did: the freeze
overwrote LIQUIDATING with FROZEN, so once the price recovered no new attempt was decided
(``_assess_and_act`` only continues a LIQUIDATING account) and the monitor stopped asking
(``_reenforced`` looks for LIQUIDATING). Now the freeze keeps LIQUIDATING and is remembered in
the liquidation's event (pms.accounts.freeze). docs/risk.md: a FAILED liquidation leaves the
account LIQUIDATING "even if an admin froze it meanwhile (frozen kept for the next
liquidation)"; enforce.py: "A liquidation, once decided, runs to the end even if the price
recovers"."""

from __future__ import annotations

from decimal import Decimal

from pms.commands import schemas as cmd
from tests.riskengine.conftest import CatchingHarness
from tests.riskengine.test_failures import held, master_qty, open_btc_and_eth
from tests.trading.conftest import BTC

D = Decimal


def test_a_freeze_during_the_backoff_does_not_abandon_the_liquidation(
    catching: CatchingHarness,
) -> None:
    h = catching
    t = open_btc_and_eth(h)
    sub = t.sub_account_id
    outside = master_qty(h, "BTCUSDT")
    h.sim.admin("/sim/positions/adjust", {"symbol": "BTCUSDT", "qty": str(-outside)})
    try:
        h.move(D("57000"))  # past liquidation: ETH closed, the BTC close refused
    finally:
        h.sim.admin("/sim/positions/adjust", {"symbol": "BTCUSDT", "qty": str(outside)})
    closes = [e for e in h.events(sub) if e.action == "liquidate_close"]
    assert [e.status for e in closes] == ["FAILED"]
    assert h.account(sub).status == "LIQUIDATING"
    assert list(held(h, sub)) == [BTC]

    # Between attempts (the backoff), an admin freezes the account; the price recovers.
    frozen = t.send(
        "freeze_sub_account",
        (cmd.FreezeSubAccount, h.app.accounts.freeze),
        role="admin",
        subAccountId=sub,
        reason="compliance review",
    )
    assert frozen["ok"], frozen
    h.move(D("60000"))
    for _ in range(3):
        h.clock.advance(2)
        h.reenforce(sub)  # what the monitor would do if it still asked (it no longer does)

    assert h.errors == []
    assert held(h, sub) == {}, (
        "the liquidation must run to the end; it was abandoned with BTC still open, "
        f"account {h.account(sub).status}"
    )
    assert h.account(sub).status == "FROZEN"
