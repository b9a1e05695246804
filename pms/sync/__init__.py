"""Reconciliation with the exchange: order-sync and position-sync (SPEC §6)."""
