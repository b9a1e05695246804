"""A sub-account remembers the request that created it.

``create_sub_account`` commits the account in its own transaction, before the runner stores
the command's result; if that store fails (or the worker dies in between) the command stays
open, and its retry created a second account. The retry now finds the first by its requestId
(pms.accounts.commands). Unique where set; the house and accounts created before this
migration have none.

Revision ID: 0005
Revises: 0004
Create Date: 2026-12-03 17:40:00
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0005"
down_revision = "0004"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.add_column("sub_accounts", sa.Column("request_id", sa.String(length=64), nullable=True))
    op.create_index(
        op.f("uq_sub_accounts_request"),
        "sub_accounts",
        ["request_id"],
        unique=True,
        postgresql_where=sa.text("request_id IS NOT NULL"),
    )


def downgrade() -> None:
    op.drop_index(op.f("uq_sub_accounts_request"), table_name="sub_accounts")
    op.drop_column("sub_accounts", "request_id")
