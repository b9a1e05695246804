"""Funding: the exchange's funding payments shared out to the sub-accounts (SPEC §4 ledger
kind FUNDING)."""
