"""An account pushed into RESTRICTED that the trader then closes completely is evaluated once
more, flat, before the monitor drops its book: the tier change RESTRICTED -> NORMAL is
enforced and the account is ACTIVE again. The monitor used to drop a flat book on reload
without a pass, and the account stayed RESTRICTED (new orders refused) for good."""

from __future__ import annotations

from decimal import Decimal

from pms.commands import schemas as cmd
from tests.riskengine.conftest import Harness
from tests.trading.conftest import BTC

D = Decimal


def test_flat_account_leaves_restricted(harness: Harness) -> None:
    h = harness
    t = h.open_long("1000", "0.5", 50)
    sub = t.sub_account_id
    h.move(h.mark_for_ratio(sub, D("0.805")))
    account = h.account(sub)
    assert (account.tier, account.status) == ("RESTRICTED", "RESTRICTED")

    # The price recovers a little but the trader closes everything at once (reducing: allowed).
    h.close_position(t)
    h.monitor.reload([sub])  # what the change feed does on the booking's events
    h.monitor.revisit()
    h.monitor.load_all()  # and the 30 s full reload
    h.monitor.on_marks({BTC: D("60000")})

    assert h.state(sub)[1] == 0
    account = h.account(sub)
    # Margin ratio is 0 with no position: tier NORMAL, status ACTIVE again.
    assert (account.tier, account.status) == ("NORMAL", "ACTIVE"), (
        f"flat account stuck at {account.tier}/{account.status}; enforced={h.enforced}"
    )
    opened = t.send(
        "place_market_order",
        (cmd.PlaceMarketOrder, h.app.orders.place_market),
        subAccountId=sub,
        symbol=BTC,
        side="BUY",
        qty="0.002",
        leverage=10,
    )
    assert opened["ok"], opened
