"""Initial schema: accounts, risk rules, ledger, positions, orders, fills, requests, algos,
liquidation events; and the house account.

Revision ID: 0001
Revises:
Create Date: 2026-11-24 00:55:55.670296
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision = "0001"
down_revision = None
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "requests",
        sa.Column("request_id", sa.String(length=64), nullable=False),
        sa.Column("actor", sa.String(length=64), nullable=False),
        sa.Column("user_id", sa.String(length=64), nullable=True),
        sa.Column("payload_hash", sa.String(length=64), nullable=False),
        sa.Column("status", sa.String(length=12), server_default="PENDING", nullable=False),
        sa.Column("result", postgresql.JSONB(astext_type=sa.Text()), nullable=True),
        sa.Column(
            "created_at",
            sa.DateTime(timezone=True),
            server_default=sa.text("now()"),
            nullable=False,
        ),
        sa.Column("completed_at", sa.DateTime(timezone=True), nullable=True),
        sa.CheckConstraint("status IN ('PENDING', 'DONE')", name=op.f("ck_requests_status_valid")),
        sa.PrimaryKeyConstraint("request_id", name=op.f("pk_requests")),
    )
    op.create_table(
        "sub_accounts",
        sa.Column("id", sa.BigInteger(), sa.Identity(always=False), nullable=False),
        sa.Column("name", sa.String(length=100), nullable=False),
        sa.Column("owner_user_id", sa.String(length=64), nullable=False),
        sa.Column("status", sa.String(length=16), server_default="ACTIVE", nullable=False),
        sa.Column("tier", sa.String(length=16), server_default="NORMAL", nullable=False),
        sa.Column("is_house", sa.Boolean(), server_default=sa.text("false"), nullable=False),
        sa.Column(
            "wallet_balance", sa.Numeric(precision=36, scale=18), server_default="0", nullable=False
        ),
        sa.Column(
            "created_at",
            sa.DateTime(timezone=True),
            server_default=sa.text("now()"),
            nullable=False,
        ),
        sa.Column(
            "updated_at",
            sa.DateTime(timezone=True),
            server_default=sa.text("now()"),
            nullable=False,
        ),
        sa.CheckConstraint(
            "status IN ('ACTIVE', 'RESTRICTED', 'LIQUIDATING', 'FROZEN', 'CLOSED')",
            name=op.f("ck_sub_accounts_status_valid"),
        ),
        sa.CheckConstraint(
            "tier IN ('NORMAL', 'WARNING', 'RESTRICTED', 'ADL1', 'ADL2', 'LIQUIDATION')",
            name=op.f("ck_sub_accounts_tier_valid"),
        ),
        sa.CheckConstraint(
            "is_house OR wallet_balance >= 0", name=op.f("ck_sub_accounts_wallet_non_negative")
        ),
        sa.CheckConstraint("length(name) > 0", name=op.f("ck_sub_accounts_name_not_empty")),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_sub_accounts")),
    )
    op.create_index(
        op.f("ix_sub_accounts_owner_user_id"), "sub_accounts", ["owner_user_id"], unique=False
    )
    op.create_index(
        "uq_sub_accounts_one_house",
        "sub_accounts",
        ["is_house"],
        unique=True,
        postgresql_where=sa.text("is_house"),
    )
    op.create_table(
        "algo_runs",
        sa.Column("id", sa.BigInteger(), sa.Identity(always=False), nullable=False),
        sa.Column("type", sa.String(length=16), nullable=False),
        sa.Column("sub_account_id", sa.BigInteger(), nullable=False),
        sa.Column("status", sa.String(length=16), server_default="RUNNING", nullable=False),
        sa.Column("params", postgresql.JSONB(astext_type=sa.Text()), nullable=False),
        sa.Column(
            "state",
            postgresql.JSONB(astext_type=sa.Text()),
            server_default=sa.text("'{}'::jsonb"),
            nullable=False,
        ),
        sa.Column("request_id", sa.String(length=64), nullable=True),
        sa.Column(
            "created_at",
            sa.DateTime(timezone=True),
            server_default=sa.text("now()"),
            nullable=False,
        ),
        sa.Column(
            "updated_at",
            sa.DateTime(timezone=True),
            server_default=sa.text("now()"),
            nullable=False,
        ),
        sa.Column("finished_at", sa.DateTime(timezone=True), nullable=True),
        sa.CheckConstraint(
            "status IN ('RUNNING', 'PAUSED', 'COMPLETED', 'CANCELED', 'FAILED')",
            name=op.f("ck_algo_runs_status_valid"),
        ),
        sa.CheckConstraint(
            "type IN ('chase', 'scalper', 'twap', 'trail', 'basket')",
            name=op.f("ck_algo_runs_type_valid"),
        ),
        sa.ForeignKeyConstraint(
            ["sub_account_id"],
            ["sub_accounts.id"],
            name=op.f("fk_algo_runs_sub_account_id_sub_accounts"),
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_algo_runs")),
    )
    op.create_index(
        op.f("ix_algo_runs_sub_account_id"), "algo_runs", ["sub_account_id"], unique=False
    )
    op.create_table(
        "ledger_entries",
        sa.Column("id", sa.BigInteger(), sa.Identity(always=False), nullable=False),
        sa.Column("sub_account_id", sa.BigInteger(), nullable=False),
        sa.Column("kind", sa.String(length=24), nullable=False),
        sa.Column("amount", sa.Numeric(precision=36, scale=18), nullable=False),
        sa.Column("balance_after", sa.Numeric(precision=36, scale=18), nullable=False),
        sa.Column("asset", sa.String(length=10), server_default="USDT", nullable=False),
        sa.Column("ref_type", sa.String(length=24), nullable=True),
        sa.Column("ref_id", sa.String(length=96), nullable=True),
        sa.Column("note", sa.Text(), nullable=True),
        sa.Column(
            "created_at",
            sa.DateTime(timezone=True),
            server_default=sa.text("now()"),
            nullable=False,
        ),
        sa.CheckConstraint(
            "kind IN ('DEPOSIT', 'WITHDRAWAL', 'REALIZED_PNL', 'FEE', 'FUNDING', 'LIQUIDATION_FEE', 'INSURANCE', 'TRANSFER')",
            name=op.f("ck_ledger_entries_kind_valid"),
        ),
        sa.CheckConstraint("amount <> 0", name=op.f("ck_ledger_entries_amount_not_zero")),
        sa.ForeignKeyConstraint(
            ["sub_account_id"],
            ["sub_accounts.id"],
            name=op.f("fk_ledger_entries_sub_account_id_sub_accounts"),
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_ledger_entries")),
        sa.UniqueConstraint("sub_account_id", "kind", "ref_type", "ref_id", name="uq_ledger_ref"),
    )
    op.create_index(
        op.f("ix_ledger_entries_sub_account_id"), "ledger_entries", ["sub_account_id"], unique=False
    )
    op.create_table(
        "liquidation_events",
        sa.Column("id", sa.BigInteger(), sa.Identity(always=False), nullable=False),
        sa.Column("sub_account_id", sa.BigInteger(), nullable=False),
        sa.Column("idempotency_key", sa.String(length=128), nullable=False),
        sa.Column("tier", sa.String(length=16), nullable=False),
        sa.Column("action", sa.String(length=24), nullable=False),
        sa.Column("status", sa.String(length=12), server_default="PENDING", nullable=False),
        sa.Column("margin_ratio", sa.Numeric(precision=36, scale=18), nullable=True),
        sa.Column("equity", sa.Numeric(precision=36, scale=18), nullable=True),
        sa.Column(
            "details",
            postgresql.JSONB(astext_type=sa.Text()),
            server_default=sa.text("'{}'::jsonb"),
            nullable=False,
        ),
        sa.Column(
            "created_at",
            sa.DateTime(timezone=True),
            server_default=sa.text("now()"),
            nullable=False,
        ),
        sa.Column("completed_at", sa.DateTime(timezone=True), nullable=True),
        sa.CheckConstraint(
            "status IN ('PENDING', 'DONE', 'FAILED')",
            name=op.f("ck_liquidation_events_status_valid"),
        ),
        sa.CheckConstraint(
            "tier IN ('NORMAL', 'WARNING', 'RESTRICTED', 'ADL1', 'ADL2', 'LIQUIDATION')",
            name=op.f("ck_liquidation_events_tier_valid"),
        ),
        sa.ForeignKeyConstraint(
            ["sub_account_id"],
            ["sub_accounts.id"],
            name=op.f("fk_liquidation_events_sub_account_id_sub_accounts"),
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_liquidation_events")),
        sa.UniqueConstraint("idempotency_key", name=op.f("uq_liquidation_events_idempotency_key")),
    )
    op.create_index(
        op.f("ix_liquidation_events_sub_account_id"),
        "liquidation_events",
        ["sub_account_id"],
        unique=False,
    )
    op.create_table(
        "orders",
        sa.Column("id", sa.BigInteger(), sa.Identity(always=False), nullable=False),
        sa.Column("client_order_id", sa.String(length=36), nullable=False),
        sa.Column("exchange_order_id", sa.String(length=40), nullable=True),
        sa.Column("sub_account_id", sa.BigInteger(), nullable=False),
        sa.Column("symbol", sa.String(length=40), nullable=False),
        sa.Column("side", sa.String(length=4), nullable=False),
        sa.Column("type", sa.String(length=16), nullable=False),
        sa.Column("qty", sa.Numeric(precision=36, scale=18), nullable=False),
        sa.Column("price", sa.Numeric(precision=36, scale=18), nullable=True),
        sa.Column("reduce_only", sa.Boolean(), server_default=sa.text("false"), nullable=False),
        sa.Column("post_only", sa.Boolean(), server_default=sa.text("false"), nullable=False),
        sa.Column("time_in_force", sa.String(length=4), nullable=True),
        sa.Column("leverage", sa.Integer(), server_default="1", nullable=False),
        sa.Column("status", sa.String(length=20), server_default="PENDING_NEW", nullable=False),
        sa.Column(
            "filled_qty", sa.Numeric(precision=36, scale=18), server_default="0", nullable=False
        ),
        sa.Column("avg_price", sa.Numeric(precision=36, scale=18), nullable=True),
        sa.Column("origin", sa.String(length=64), server_default="manual", nullable=False),
        sa.Column("request_id", sa.String(length=64), nullable=True),
        sa.Column("reject_reason", sa.Text(), nullable=True),
        sa.Column(
            "created_at",
            sa.DateTime(timezone=True),
            server_default=sa.text("now()"),
            nullable=False,
        ),
        sa.Column(
            "updated_at",
            sa.DateTime(timezone=True),
            server_default=sa.text("now()"),
            nullable=False,
        ),
        sa.CheckConstraint("side IN ('BUY', 'SELL')", name=op.f("ck_orders_side_valid")),
        sa.CheckConstraint(
            "status IN ('PENDING_NEW', 'NEW', 'PARTIALLY_FILLED', 'FILLED', 'CANCELED', 'REJECTED', 'EXPIRED')",
            name=op.f("ck_orders_status_valid"),
        ),
        sa.CheckConstraint(
            "filled_qty >= 0 AND filled_qty <= qty", name=op.f("ck_orders_filled_within_qty")
        ),
        sa.CheckConstraint("qty > 0", name=op.f("ck_orders_qty_positive")),
        sa.ForeignKeyConstraint(
            ["sub_account_id"],
            ["sub_accounts.id"],
            name=op.f("fk_orders_sub_account_id_sub_accounts"),
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_orders")),
        sa.UniqueConstraint("client_order_id", name=op.f("uq_orders_client_order_id")),
        sa.UniqueConstraint("symbol", "exchange_order_id", name="uq_orders_exchange_id"),
    )
    op.create_index(
        "ix_orders_open",
        "orders",
        ["sub_account_id"],
        unique=False,
        postgresql_where=sa.text("status IN ('PENDING_NEW', 'NEW', 'PARTIALLY_FILLED')"),
    )
    op.create_index(op.f("ix_orders_request_id"), "orders", ["request_id"], unique=False)
    op.create_index(op.f("ix_orders_sub_account_id"), "orders", ["sub_account_id"], unique=False)
    op.create_table(
        "positions",
        sa.Column("id", sa.BigInteger(), sa.Identity(always=False), nullable=False),
        sa.Column("sub_account_id", sa.BigInteger(), nullable=False),
        sa.Column("symbol", sa.String(length=40), nullable=False),
        sa.Column("qty", sa.Numeric(precision=36, scale=18), server_default="0", nullable=False),
        sa.Column(
            "entry_price", sa.Numeric(precision=36, scale=18), server_default="0", nullable=False
        ),
        sa.Column("leverage", sa.Integer(), server_default="1", nullable=False),
        sa.Column(
            "realized_pnl", sa.Numeric(precision=36, scale=18), server_default="0", nullable=False
        ),
        sa.Column(
            "fees_paid", sa.Numeric(precision=36, scale=18), server_default="0", nullable=False
        ),
        sa.Column(
            "opened_at", sa.DateTime(timezone=True), server_default=sa.text("now()"), nullable=False
        ),
        sa.Column(
            "updated_at",
            sa.DateTime(timezone=True),
            server_default=sa.text("now()"),
            nullable=False,
        ),
        sa.Column("closed_at", sa.DateTime(timezone=True), nullable=True),
        sa.CheckConstraint("entry_price >= 0", name=op.f("ck_positions_entry_non_negative")),
        sa.CheckConstraint("leverage BETWEEN 1 AND 125", name=op.f("ck_positions_leverage_range")),
        sa.ForeignKeyConstraint(
            ["sub_account_id"],
            ["sub_accounts.id"],
            name=op.f("fk_positions_sub_account_id_sub_accounts"),
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_positions")),
    )
    op.create_index(
        "ix_positions_open_symbol",
        "positions",
        ["symbol"],
        unique=False,
        postgresql_where=sa.text("closed_at IS NULL"),
    )
    op.create_index(
        op.f("ix_positions_sub_account_id"), "positions", ["sub_account_id"], unique=False
    )
    op.create_index(
        "uq_positions_open",
        "positions",
        ["sub_account_id", "symbol"],
        unique=True,
        postgresql_where=sa.text("closed_at IS NULL"),
    )
    op.create_table(
        "risk_rules",
        sa.Column("sub_account_id", sa.BigInteger(), nullable=False),
        sa.Column("max_leverage", sa.Integer(), server_default="20", nullable=False),
        sa.Column("max_notional_per_symbol", sa.Numeric(precision=36, scale=18), nullable=True),
        sa.Column(
            "max_exposure_multiple",
            sa.Numeric(precision=36, scale=18),
            server_default="10",
            nullable=True,
        ),
        sa.Column("liquidation_mode", sa.String(length=16), server_default="close", nullable=False),
        sa.Column(
            "warning_ratio",
            sa.Numeric(precision=36, scale=18),
            server_default="0.70",
            nullable=False,
        ),
        sa.Column(
            "restricted_ratio",
            sa.Numeric(precision=36, scale=18),
            server_default="0.80",
            nullable=False,
        ),
        sa.Column(
            "adl1_ratio", sa.Numeric(precision=36, scale=18), server_default="0.90", nullable=False
        ),
        sa.Column(
            "adl2_ratio", sa.Numeric(precision=36, scale=18), server_default="0.95", nullable=False
        ),
        sa.Column(
            "liquidation_ratio",
            sa.Numeric(precision=36, scale=18),
            server_default="1.00",
            nullable=False,
        ),
        sa.Column("price_band_bps", sa.Integer(), server_default="500", nullable=False),
        sa.Column("max_orders_per_minute", sa.Integer(), server_default="600", nullable=False),
        sa.Column(
            "updated_at",
            sa.DateTime(timezone=True),
            server_default=sa.text("now()"),
            nullable=False,
        ),
        sa.CheckConstraint(
            "liquidation_mode IN ('close', 'takeover')", name=op.f("ck_risk_rules_mode_valid")
        ),
        sa.CheckConstraint(
            "0 < warning_ratio AND warning_ratio <= restricted_ratio AND restricted_ratio <= adl1_ratio AND adl1_ratio <= adl2_ratio AND adl2_ratio <= liquidation_ratio",
            name=op.f("ck_risk_rules_tiers_ordered"),
        ),
        sa.CheckConstraint(
            "max_leverage BETWEEN 1 AND 125", name=op.f("ck_risk_rules_max_leverage_range")
        ),
        sa.ForeignKeyConstraint(
            ["sub_account_id"],
            ["sub_accounts.id"],
            name=op.f("fk_risk_rules_sub_account_id_sub_accounts"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("sub_account_id", name=op.f("pk_risk_rules")),
    )
    op.create_table(
        "symbol_leverage",
        sa.Column("sub_account_id", sa.BigInteger(), nullable=False),
        sa.Column("symbol", sa.String(length=40), nullable=False),
        sa.Column("leverage", sa.Integer(), nullable=False),
        sa.Column(
            "updated_at",
            sa.DateTime(timezone=True),
            server_default=sa.text("now()"),
            nullable=False,
        ),
        sa.CheckConstraint(
            "leverage BETWEEN 1 AND 125", name=op.f("ck_symbol_leverage_leverage_range")
        ),
        sa.ForeignKeyConstraint(
            ["sub_account_id"],
            ["sub_accounts.id"],
            name=op.f("fk_symbol_leverage_sub_account_id_sub_accounts"),
        ),
        sa.PrimaryKeyConstraint("sub_account_id", "symbol", name=op.f("pk_symbol_leverage")),
    )
    op.create_table(
        "fills",
        sa.Column("id", sa.BigInteger(), sa.Identity(always=False), nullable=False),
        sa.Column("sub_account_id", sa.BigInteger(), nullable=False),
        sa.Column("order_id", sa.BigInteger(), nullable=True),
        sa.Column("symbol", sa.String(length=40), nullable=False),
        sa.Column("exchange_trade_id", sa.String(length=64), nullable=False),
        sa.Column("side", sa.String(length=4), nullable=False),
        sa.Column("qty", sa.Numeric(precision=36, scale=18), nullable=False),
        sa.Column("price", sa.Numeric(precision=36, scale=18), nullable=False),
        sa.Column("fee", sa.Numeric(precision=36, scale=18), server_default="0", nullable=False),
        sa.Column("fee_asset", sa.String(length=10), server_default="USDT", nullable=False),
        sa.Column(
            "realized_pnl", sa.Numeric(precision=36, scale=18), server_default="0", nullable=False
        ),
        sa.Column("is_maker", sa.Boolean(), server_default=sa.text("false"), nullable=False),
        sa.Column("source", sa.String(length=16), nullable=False),
        sa.Column("traded_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column(
            "booked_at", sa.DateTime(timezone=True), server_default=sa.text("now()"), nullable=False
        ),
        sa.CheckConstraint("price > 0", name=op.f("ck_fills_price_positive")),
        sa.CheckConstraint("qty > 0", name=op.f("ck_fills_qty_positive")),
        sa.ForeignKeyConstraint(["order_id"], ["orders.id"], name=op.f("fk_fills_order_id_orders")),
        sa.ForeignKeyConstraint(
            ["sub_account_id"],
            ["sub_accounts.id"],
            name=op.f("fk_fills_sub_account_id_sub_accounts"),
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_fills")),
        sa.UniqueConstraint("symbol", "exchange_trade_id", name="uq_fills_trade"),
    )
    op.create_index(op.f("ix_fills_order_id"), "fills", ["order_id"], unique=False)
    op.create_index(op.f("ix_fills_sub_account_id"), "fills", ["sub_account_id"], unique=False)
    # The house account takes over liquidated positions and absorbs insurance losses.
    op.execute(
        "INSERT INTO sub_accounts (name, owner_user_id, is_house) VALUES ('house', 'house', true)"
    )
    op.execute("INSERT INTO risk_rules (sub_account_id) SELECT id FROM sub_accounts WHERE is_house")


def downgrade() -> None:
    op.drop_index(op.f("ix_fills_sub_account_id"), table_name="fills")
    op.drop_index(op.f("ix_fills_order_id"), table_name="fills")
    op.drop_table("fills")
    op.drop_table("symbol_leverage")
    op.drop_table("risk_rules")
    op.drop_index(
        "uq_positions_open", table_name="positions", postgresql_where=sa.text("closed_at IS NULL")
    )
    op.drop_index(op.f("ix_positions_sub_account_id"), table_name="positions")
    op.drop_index(
        "ix_positions_open_symbol",
        table_name="positions",
        postgresql_where=sa.text("closed_at IS NULL"),
    )
    op.drop_table("positions")
    op.drop_index(op.f("ix_orders_sub_account_id"), table_name="orders")
    op.drop_index(op.f("ix_orders_request_id"), table_name="orders")
    op.drop_index(
        "ix_orders_open",
        table_name="orders",
        postgresql_where=sa.text("status IN ('PENDING_NEW', 'NEW', 'PARTIALLY_FILLED')"),
    )
    op.drop_table("orders")
    op.drop_index(op.f("ix_liquidation_events_sub_account_id"), table_name="liquidation_events")
    op.drop_table("liquidation_events")
    op.drop_index(op.f("ix_ledger_entries_sub_account_id"), table_name="ledger_entries")
    op.drop_table("ledger_entries")
    op.drop_index(op.f("ix_algo_runs_sub_account_id"), table_name="algo_runs")
    op.drop_table("algo_runs")
    op.drop_index(
        "uq_sub_accounts_one_house", table_name="sub_accounts", postgresql_where=sa.text("is_house")
    )
    op.drop_index(op.f("ix_sub_accounts_owner_user_id"), table_name="sub_accounts")
    op.drop_table("sub_accounts")
    op.drop_table("requests")
