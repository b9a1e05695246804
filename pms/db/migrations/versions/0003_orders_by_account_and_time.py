"""Orders indexed by sub-account and creation time.

The pre-trade order-rate check counts a sub-account's orders of the last minute on every
order (pms.execution.context, ``pms_order_context``). With an index on the sub-account alone,
Postgres read every order the account ever placed to count the last minute's: the cost of an
order grew with the account's history. The index on (sub_account_id, created_at) reads only
the last minute's; it serves every lookup by sub-account too, so the old index goes (one index
less to maintain per order).

Both are built and dropped ``CONCURRENTLY``: the orders table takes writes meanwhile. The old
index goes only once the new one is built (a failed build raises first); an invalid index left
by an interrupted build is dropped and built again.

Revision ID: 0003
Revises: 0002
Create Date: 2026-12-03 16:00:00
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0003"
down_revision = "0002"
branch_labels = None
depends_on = None


_INVALID = sa.text(
    "SELECT 1 FROM pg_index i JOIN pg_class c ON c.oid = i.indexrelid"
    " WHERE c.relname = :name AND NOT i.indisvalid"
)


def upgrade() -> None:
    with op.get_context().autocommit_block():
        # An interrupted CREATE INDEX CONCURRENTLY leaves an invalid index of that name behind,
        # which IF NOT EXISTS would keep: drop it, build it again.
        if op.get_bind().execute(_INVALID, {"name": "ix_orders_sub_account_created"}).first():
            op.drop_index(
                op.f("ix_orders_sub_account_created"),
                table_name="orders",
                postgresql_concurrently=True,
            )
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
