"""A scripted price path drives one sub-account through every tier, with the expected
orders, balances, ledger entries and events at each step worked out from the formulas."""

from __future__ import annotations

from decimal import Decimal

from sqlalchemy import select

from pms.commands import schemas as cmd
from pms.db.models import Order
from pms.db.session import unit_of_work
from pms.domain.enums import Tier
from pms.risk.tiers import DEFAULT_THRESHOLDS, classify_tier
from tests.riskengine.conftest import MMR, Harness
from tests.trading.conftest import BTC

D = Decimal


def ratio_at(h: Harness, sub: int, mark: D) -> D:
    wallet, qty, entry = h.state(sub)
    return qty * mark * MMR / (wallet + qty * (mark - entry))


def orders(h: Harness, sub: int) -> list[Order]:
    with unit_of_work(h.app.sessions) as s:
        return list(
            s.execute(select(Order).where(Order.sub_account_id == sub).order_by(Order.id)).scalars()
        )


def risk_key(h: Harness, sub: int) -> dict:
    import orjson

    return orjson.loads(h.app.redis.get(f"{h.app.settings.redis_prefix}pms:risk:{sub}"))


def test_warning_restricted_adl1_adl2_liquidation(harness: Harness) -> None:
    h = harness
    t = h.open_long("1000", "0.5", 50)
    sub = t.sub_account_id
    _wallet0, qty0, entry0 = h.state(sub)
    assert qty0 == D("0.5")
    # A risk-increasing working order, far enough below to never fill on this path.
    resting = t.send(
        "place_limit_order",
        (cmd.PlaceLimitOrder, h.app.orders.place_limit),
        subAccountId=sub,
        symbol=BTC,
        side="BUY",
        qty="0.002",
        price="57500",
        leverage=50,
    )
    assert resting["ok"] and resting["data"]["status"] == "NEW", resting

    # WARNING at a ratio of 0.705: one margin call, nothing else.
    m = h.mark_for_ratio(sub, D("0.705"))
    h.move(m)
    assert h.account(sub).tier == "WARNING" and h.account(sub).status == "ACTIVE"
    snap = risk_key(h, sub)
    assert snap["marginRatio"] == str(ratio_at(h, sub, m).quantize(D("0.000001")))
    assert snap["tier"] == "WARNING"
    assert len(h.published("margin_call", sub)) == 1
    # Hysteresis: dipping to 0.69 (inside the 0.02 band) and back is the same crossing.
    h.move(h.mark_for_ratio(sub, D("0.69")))
    h.move(h.mark_for_ratio(sub, D("0.706")))
    assert len(h.published("margin_call", sub)) == 1 and h.account(sub).tier == "WARNING"

    # RESTRICTED at 0.805: status restricted, the working buy cancelled, new buys refused.
    h.move(h.mark_for_ratio(sub, D("0.805")))
    account = h.account(sub)
    assert (account.tier, account.status) == ("RESTRICTED", "RESTRICTED")
    assert [o.status for o in orders(h, sub) if o.id == resting["data"]["orderId"]] == ["CANCELED"]
    refused = t.send(
        "place_market_order",
        (cmd.PlaceMarketOrder, h.app.orders.place_market),
        subAccountId=sub,
        symbol=BTC,
        side="BUY",
        qty="0.002",
    )
    assert refused["error"]["code"] == "ACCOUNT_RESTRICTED"

    # ADL1 at 0.905: one reduce-only market sell of 25% of 0.5 = 0.125.
    before = len(orders(h, sub))
    m = h.mark_for_ratio(sub, D("0.905"))
    h.move(m)
    cuts = orders(h, sub)[before:]
    assert [(o.side, o.qty, o.reduce_only, o.status) for o in cuts] == [
        ("SELL", D("0.125"), True, "FILLED")
    ]
    assert cuts[0].origin.startswith("adl:")
    _wallet, qty, entry = h.state(sub)
    assert qty == D("0.375") and entry == entry0
    # After the cut the ratio at the same mark is back under RESTRICTED; the tier follows
    # the hysteresis rule from ADL1.
    expected = classify_tier(Tier.ADL1, ratio_at(h, sub, m), DEFAULT_THRESHOLDS)
    assert ratio_at(h, sub, m) < D("0.80")
    assert h.account(sub).tier == expected.value
    assert h.account(sub).status == (
        "ACTIVE" if expected.severity < Tier.RESTRICTED.severity else "RESTRICTED"
    )
    adl = [e for e in h.events(sub) if e.action == "adl"]
    assert (
        len(adl) == 1
        and adl[0].status == "DONE"
        and adl[0].details["cuts"] == [{"symbol": BTC, "side": "SELL", "qty": "0.125"}]
    )

    # ADL2 at 0.955: 50% of 0.375 = 0.1875, rounded down to the 0.001 step: 0.187.
    before = len(orders(h, sub))
    h.move(h.mark_for_ratio(sub, D("0.955")))
    cuts = orders(h, sub)[before:]
    assert [(o.side, o.qty, o.status) for o in cuts] == [("SELL", D("0.187"), "FILLED")]
    assert h.state(sub)[1] == D("0.188")

    # LIQUIDATION at 1.005 (mode close): everything closed at market, the account flat.
    before = len(orders(h, sub))
    h.move(h.mark_for_ratio(sub, D("1.005")))
    closes = orders(h, sub)[before:]
    assert [(o.side, o.qty, o.origin, o.status) for o in closes] == [
        ("SELL", D("0.188"), "liquidation", "FILLED")
    ]
    assert h.state(sub)[1] == 0
    account = h.account(sub)
    assert (account.status, account.tier) == ("ACTIVE", "NORMAL")
    liquidation = [e for e in h.events(sub) if e.action == "liquidate_close"]
    assert len(liquidation) == 1 and liquidation[0].status == "DONE"
    assert h.published("liquidation", sub)[-1]["data"]["action"] == "liquidate_close"

    # The ledger explains the balance exactly: deposit, fees and realized PnL of each fill.
    ledger = h.ledger(sub)
    assert sum(amount for _, amount in ledger) == account.wallet_balance >= 0
    kinds = [k for k, _ in ledger]
    fills = [
        f
        for f in h.sim.admin("/sim/state")["fills"]
        if str(f["orderId"]) in {o.exchange_order_id for o in orders(h, sub)}
    ]
    assert kinds.count("DEPOSIT") == 1 and kinds.count("FEE") == len(fills)
    fills = [f for f in fills if f["side"] == "SELL"]
    assert kinds.count("REALIZED_PNL") == len(fills)  # one per closing fill
    realized = sum(D(f["qty"]) * (D(f["price"]) - entry0) for f in fills)
    assert sum(a for k, a in ledger if k == "REALIZED_PNL") == realized


def test_margin_call_again_only_after_leaving_the_band(harness: Harness) -> None:
    h = harness
    sub = h.open_long("1000", "0.5", 50).sub_account_id
    h.move(h.mark_for_ratio(sub, D("0.71")))
    h.move(h.mark_for_ratio(sub, D("0.60")))  # below 0.70 - 0.02: back to NORMAL
    assert h.account(sub).tier == "NORMAL"
    h.move(h.mark_for_ratio(sub, D("0.71")))
    assert len(h.published("margin_call", sub)) == 2


def test_restricted_keeps_only_the_working_sells_that_fit_in_the_long(harness: Harness) -> None:
    # Arrange: long 0.5; two resting SELL 0.3 (each alone would fit in the long; together
    # they could leave a short of 0.1 once the account is restricted).
    h = harness
    t = h.open_long("1000", "0.5", 50)
    sub = t.sub_account_id
    sells = [
        t.send(
            "place_limit_order",
            (cmd.PlaceLimitOrder, h.app.orders.place_limit),
            subAccountId=sub,
            symbol=BTC,
            side="SELL",
            qty="0.3",
            price="62500",
        )
        for _ in range(2)
    ]
    assert all(r["ok"] and r["data"]["status"] == "NEW" for r in sells), sells

    # Act: the mark falls into RESTRICTED.
    h.move(h.mark_for_ratio(sub, D("0.805")))

    # Assert: the older sell is kept (it reduces), the newer one cancelled.
    assert h.account(sub).status == "RESTRICTED"
    status = {o.id: o.status for o in orders(h, sub)}
    assert [status[r["data"]["orderId"]] for r in sells] == ["NEW", "CANCELED"]
