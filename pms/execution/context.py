"""Build the risk checks' view of a sub-account (``RiskContext``) from Postgres and prices.

Called under the sub-account's row lock, so what the checks see is what the order will be
judged against: open orders (including intents not yet acknowledged) reserve margin, which is
what stops concurrent orders from many workers overspending one sub-account.
"""

from __future__ import annotations

from datetime import timedelta
from decimal import Decimal

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from pms.clock import Clock
from pms.db.models import Order, Position, RiskRules, SubAccount, SymbolLeverage
from pms.domain.enums import AccountStatus, OrderStatus, Side, Tier
from pms.domain.instrument import Instrument
from pms.risk.context import Quote, RiskContext
from pms.risk.context import RiskRules as RulesView
from pms.risk.snapshot import OpenOrder, RiskPosition
from pms.risk.tiers import TierThresholds

OPEN_STATUSES = [s.value for s in OrderStatus if s.is_open]


def rules_view(rules: RiskRules) -> RulesView:
    return RulesView(
        max_leverage=rules.max_leverage,
        max_notional_per_symbol=rules.max_notional_per_symbol,
        max_exposure_multiple=rules.max_exposure_multiple,
        price_band_bps=rules.price_band_bps,
        max_orders_per_window=rules.max_orders_per_minute,
        thresholds=TierThresholds(
            warning=rules.warning_ratio,
            restricted=rules.restricted_ratio,
            adl1=rules.adl1_ratio,
            adl2=rules.adl2_ratio,
            liquidation=rules.liquidation_ratio,
        ),
    )


def open_positions(session: Session, sub_account_id: int) -> dict[str, RiskPosition]:
    rows = session.execute(
        select(Position.symbol, Position.qty, Position.entry_price, Position.leverage).where(
            Position.sub_account_id == sub_account_id, Position.closed_at.is_(None)
        )
    )
    return {
        sym: RiskPosition(symbol=sym, qty=qty, entry=entry, leverage=lev)
        for sym, qty, entry, lev in rows
    }


def open_orders(session: Session, sub_account_id: int) -> list[OpenOrder]:
    rows = session.execute(
        select(
            Order.symbol,
            Order.side,
            Order.qty,
            Order.filled_qty,
            Order.price,
            Order.leverage,
            Order.reduce_only,
        ).where(Order.sub_account_id == sub_account_id, Order.status.in_(OPEN_STATUSES))
    )
    return [
        OpenOrder(
            symbol=sym, side=Side(side), qty=qty - filled, price=price, leverage=lev, reduce_only=ro
        )
        for sym, side, qty, filled, price, lev, ro in rows
        if qty > filled
    ]


def build_context(
    session: Session,
    account: SubAccount,
    instruments: dict[str, Instrument],
    marks: dict[str, Decimal],
    quotes: dict[str, Quote],
    clock: Clock,
    *,
    positions: dict[str, RiskPosition] | None = None,
) -> RiskContext:
    """``positions``: the open positions when the caller already read them under the lock."""
    rules = session.get(RiskRules, account.id)
    assert rules is not None, "every sub-account has a risk_rules row"
    since = clock.now() - timedelta(minutes=1)
    recent = session.execute(
        select(func.count())
        .select_from(Order)
        .where(Order.sub_account_id == account.id, Order.created_at >= since)
    ).scalar_one()
    leverages = dict(
        session.execute(
            select(SymbolLeverage.symbol, SymbolLeverage.leverage).where(
                SymbolLeverage.sub_account_id == account.id
            )
        ).all()
    )
    return RiskContext(
        status=AccountStatus(account.status),
        wallet=account.wallet_balance,
        rules=rules_view(rules),
        positions=open_positions(session, account.id) if positions is None else positions,
        marks=marks,
        instruments=instruments,
        open_orders=open_orders(session, account.id),
        recent_order_count=int(recent),
        tier=Tier(account.tier),
        quotes=quotes,
        leverages=leverages,
    )
