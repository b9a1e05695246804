"""A sub-account's wallet may go below zero while it holds open positions.

A fill's realized loss used to be capped at the wallet and the rest paid by the house at once,
even when the account's other open positions carried the profit to cover it; the profit, once
realized, stayed with the account (the house paid a solvent account's loss). The wallet now
takes the whole loss, as Binance's cross wallet does, and the house insures only what is still
negative when the account holds no position (pms.execution.booking). The check that refused
any negative sub-account balance goes; entries that lower a balance below zero are refused by
pms.accounts.ledger.post_entry for everything but fills.

Revision ID: 0002
Revises: 0001
Create Date: 2026-12-03 09:00:00
"""

from __future__ import annotations

from alembic import op

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.drop_constraint(op.f("ck_sub_accounts_wallet_non_negative"), "sub_accounts", type_="check")


def downgrade() -> None:
    # Refused while a sub-account's wallet is below zero: settle those accounts first.
    op.create_check_constraint(
        op.f("ck_sub_accounts_wallet_non_negative"),
        "sub_accounts",
        "is_house OR wallet_balance >= 0",
    )
