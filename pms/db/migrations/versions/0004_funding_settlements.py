"""Funding settlements: the exchange's funding of each symbol at each funding time, shared out
to the sub-accounts that held the symbol at that time (pms.funding).

``funding_settlements`` holds one row per (symbol, funding time) once it is settled: the rate
and mark it was settled at, what the master account was paid or charged (the exchange's
income record), what the sub-accounts' entries sum to and the house's residual. The row is
written in the transaction that posts the FUNDING ledger entries, so a funding time is settled
exactly once.

Holdings at a past funding time are worked back from the open positions and the fills traded
after it: ``fills (symbol, traded_at)`` finds those without reading the symbol's history. Built
``CONCURRENTLY`` (the fills table takes writes meanwhile); an invalid index left by an
interrupted build is dropped and built again.

Revision ID: 0004
Revises: 0003
Create Date: 2026-12-03 17:00:00
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0004"
down_revision = "0003"
branch_labels = None
depends_on = None

_INVALID = sa.text(
    "SELECT 1 FROM pg_index i JOIN pg_class c ON c.oid = i.indexrelid"
    " WHERE c.relname = :name AND NOT i.indisvalid"
)


def upgrade() -> None:
    op.create_table(
        "funding_settlements",
        sa.Column("symbol", sa.String(length=40), nullable=False),
        sa.Column("funding_time", sa.DateTime(timezone=True), nullable=False),
        sa.Column("rate", sa.Numeric(precision=36, scale=18), nullable=False),
        sa.Column("mark_price", sa.Numeric(precision=36, scale=18), nullable=False),
        sa.Column("exchange_amount", sa.Numeric(precision=36, scale=18), nullable=False),
        sa.Column("allocated", sa.Numeric(precision=36, scale=18), nullable=False),
        sa.Column("house_residual", sa.Numeric(precision=36, scale=18), nullable=False),
        sa.Column("accounts", sa.Integer(), nullable=False),
        sa.Column(
            "settled_at",
            sa.DateTime(timezone=True),
            server_default=sa.text("now()"),
            nullable=False,
        ),
        sa.CheckConstraint("mark_price > 0", name=op.f("ck_funding_settlements_mark_positive")),
        sa.CheckConstraint("accounts >= 0", name=op.f("ck_funding_settlements_accounts_counted")),
        sa.PrimaryKeyConstraint("symbol", "funding_time", name=op.f("pk_funding_settlements")),
    )
    with op.get_context().autocommit_block():
        if op.get_bind().execute(_INVALID, {"name": "ix_fills_symbol_traded"}).first():
            op.drop_index(
                op.f("ix_fills_symbol_traded"), table_name="fills", postgresql_concurrently=True
            )
        op.create_index(
            op.f("ix_fills_symbol_traded"),
            "fills",
            ["symbol", "traded_at"],
            postgresql_concurrently=True,
            if_not_exists=True,
        )


def downgrade() -> None:
    with op.get_context().autocommit_block():
        op.drop_index(
            op.f("ix_fills_symbol_traded"),
            table_name="fills",
            postgresql_concurrently=True,
            if_exists=True,
        )
    op.drop_table("funding_settlements")
