"""Orders indexed by sub-account and creation time.

The pre-trade order-rate check counts a sub-account's orders of the last minute on every
order (pms.execution.context, ``pms_order_context``). With an index on the sub-account alone,
Postgres read every order the account ever placed to count the last minute's: the cost of an
order grew with the account's history. The index on (sub_account_id, created_at) reads only
the last minute's; it serves every lookup by sub-account too, so the old index goes (one index
less to maintain per order).

Both are built and dropped ``CONCURRENTLY``: the orders table takes writes meanwhile.

Revision ID: 0003
Revises: 0002
Create Date: 2026-12-03 16:00:00
"""

from __future__ import annotations

from alembic import op

revision = "0003"
down_revision = "0002"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.get_context().autocommit_block():
        op.create_index(
            op.f("ix_orders_sub_account_created"),
            "orders",
            ["sub_account_id", "created_at"],
            postgresql_concurrently=True,
            if_not_exists=True,
        )
        op.drop_index(
            op.f("ix_orders_sub_account_id"),
            table_name="orders",
            postgresql_concurrently=True,
            if_exists=True,
        )


def downgrade() -> None:
    with op.get_context().autocommit_block():
        op.create_index(
            op.f("ix_orders_sub_account_id"),
            "orders",
            ["sub_account_id"],
            postgresql_concurrently=True,
            if_not_exists=True,
        )
        op.drop_index(
            op.f("ix_orders_sub_account_created"),
            table_name="orders",
            postgresql_concurrently=True,
            if_exists=True,
        )
